"""What one API process holds up to, each against its floor or reference in
the same run (issue 17's targets 4 and 5):

* slow-upstream: with an upstream that takes 200 ms, as a model does, our
  summarize at 64 connections against calling that upstream directly: the
  throughput we keep, and the latency we add.
* memory: resident memory of a fresh API process (no model: the fake
  upstream) after 20,000 requests, against bare Starlette + the openai SDK
  after as many.
"""

from __future__ import annotations

import json

from bench.load import http_request, measure, memory, own_cpu_seconds, run
from bench.registry import Options, http_load, json_check, scenario, summary_check
from bench.rig import Rig
from bench.servers import Server
from bench.workload import SUMMARIZE_QUERY, TEXT, chat_body, graphql_body

SLOW_UPSTREAM_MS = 200
SLOW_CONCURRENCY = 64
MEMORY_REQUESTS = 20_000
MEMORY_CONCURRENCY = 64


def summarize_request(server: Server, *, miss: bool = True) -> bytes:
    """Our summarize, authenticated by the server's access token; a cache
    miss (no-store: always to the upstream) unless `miss` is false."""
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {server.token}",
        **({"Cache-Control": "no-store"} if miss else {}),
    }
    body = graphql_body(SUMMARIZE_QUERY, {"text": TEXT})
    return http_request("POST", "/graphql", server.port, body, headers)


@scenario(
    "slow-upstream",
    f"summarize (a miss) at {SLOW_CONCURRENCY} connections through our server "
    f"vs calling the fake upstream directly, both with a {SLOW_UPSTREAM_MS} ms "
    "upstream: requests/s kept and latency added",
)
def slow_upstream(rig: Rig, options: Options) -> list[dict]:
    upstream = rig.upstream(delay_ms=SLOW_UPSTREAM_MS)
    server = rig.api(f"api-{SLOW_UPSTREAM_MS}ms", upstream=upstream)
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    direct = http_request(
        "POST", "/v1/chat/completions", upstream.port, chat_body(TEXT), headers
    )
    sides = [
        ("direct", upstream, direct, json_check("choices")),
        ("ours", server, summarize_request(server), summary_check),
    ]
    if rig.before_ref:  # --before REF: that commit's server, same upstream
        before = rig.before(f"before-{SLOW_UPSTREAM_MS}ms", upstream=upstream)
        sides.append(("before", before, summarize_request(before), summary_check))
    rows = []
    # A warm-up of a few upstream round trips: every connection busy.
    warmup = max(options.warmup, 4 * SLOW_UPSTREAM_MS / 1000)
    for side, target, request, check in sides:
        for row in http_load(
            rig,
            options,
            target,
            request,
            check,
            concurrency=(SLOW_CONCURRENCY,),
            upstream=upstream,
            warmup=warmup,
        ):
            rows.append(
                {"variant": f"{side} {SLOW_UPSTREAM_MS}ms", "side": side, **row}
            )
    return rows


@scenario(
    "memory",
    f"resident memory of a fresh API process after {MEMORY_REQUESTS:,} summarize "
    "requests (misses; the fake upstream, no model) vs bare Starlette + openai "
    "SDK after as many; with --before REF, that commit's server too",
)
def memory_after_requests(rig: Rig, options: Options) -> list[dict]:
    count = MEMORY_REQUESTS // 10 if options.quick else MEMORY_REQUESTS
    # Fresh processes: what they hold comes from these requests alone.
    baseline = rig.baseline("baseline-memory")
    server = rig.api("api-memory")
    body = json.dumps({"text": TEXT}).encode()
    sides = [
        (
            "baseline",
            baseline,
            http_request(
                "POST",
                "/summarize",
                baseline.port,
                body,
                {"Content-Type": "application/json"},
            ),
            json_check("text"),
        ),
        ("ours", server, summarize_request(server), summary_check),
    ]
    if rig.before_ref:  # --before REF: that commit's server, fresh too
        before = rig.before("before-memory")
        sides.append(("before", before, summarize_request(before), summary_check))
    rows = []
    for side, target, request, check in sides:
        start = memory(target.process.pid, "start")
        row = run(
            measure(
                port=target.port,
                request=request,
                concurrency=MEMORY_CONCURRENCY,
                warmup=0,
                duration=3600,  # until `count` requests are done
                check=check,
                cpu={"server": target.cpu_seconds, "client": own_cpu_seconds},
                max_requests=count,
            )
        )
        rows.append(
            {
                "variant": side,
                "side": side,
                "sent": count,
                **row,
                **start,
                **memory(target.process.pid, "after"),
            }
        )
        rig.stop(target.name)  # its memory is measured: no one else's to pay
    return rows
