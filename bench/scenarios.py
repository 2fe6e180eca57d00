"""The scenarios `python -m bench` runs, in the order of SCENARIOS: the
floor and the reference (direct, baseline), our summarize, spend and login
here; streams, capacity (a slow upstream, memory), LiteLLM and the embedded
model in modules of their own. A new one: a function made a Scenario with
`bench.registry.scenario`, listed in SCENARIOS."""

from __future__ import annotations

import json
from collections.abc import Callable

from bench import capacity, litellm
from bench.embedded import embedded
from bench.load import http_request
from bench.registry import (
    Options,
    Scenario,
    http_load,
    json_check,
    scenario,
    summary_check,
)
from bench.rig import Rig
from bench.servers import ServerFailed, http_json
from bench.stream import stream
from bench.workload import (
    LOGIN_QUERY,
    SUMMARIZE_QUERY,
    TEXT,
    chat_body,
    graphql_body,
)


@scenario("direct", "the chat completion sent to the fake upstream directly (floor)")
def direct(rig: Rig, options: Options) -> list[dict]:
    upstream = rig.upstream()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    request = http_request(
        "POST", "/v1/chat/completions", upstream.port, chat_body(TEXT), headers
    )
    return http_load(rig, options, upstream, request, json_check("choices"))


@scenario("baseline", "bare Starlette + openai SDK, same upstream call (reference)")
def baseline(rig: Rig, options: Options) -> list[dict]:
    return _bare_starlette(rig, options, "/summarize")


@scenario(
    "floor",
    "bare Starlette answering a fixed JSON to the same request body, no upstream: "
    "the least a request served by uvicorn and Starlette costs (floor)",
)
def floor(rig: Rig, options: Options) -> list[dict]:
    return _bare_starlette(rig, options, "/answer")


def _bare_starlette(rig: Rig, options: Options, path: str) -> list[dict]:
    """A summarize request's body posted to bench/baseline_app.py's `path`."""
    server = rig.baseline()
    body = json.dumps({"text": TEXT}).encode()
    headers = {"Content-Type": "application/json"}
    request = http_request("POST", path, server.port, body, headers)
    return http_load(rig, options, server, request, json_check("text"))


@scenario(
    "summarize",
    "authenticated, rate-limited, budgeted and ledgered summarize through our "
    "server (GraphQL; rig.api: Redis and PostgreSQL when REDIS_URL and "
    "DATABASE_URL name them): a cache miss "
    "(Cache-Control: no-store: always to the upstream) with an access token "
    "(miss) and with an API key (miss-key), and a cache hit; with --before REF, "
    "the miss and the hit on that commit's server too (miss-before, hit-before)",
)
def summarize(rig: Rig, options: Options) -> list[dict]:
    server = rig.api()
    body = graphql_body(SUMMARIZE_QUERY, {"text": TEXT})
    # no-store: every request goes upstream (no-cache would let concurrent
    # identical requests share one call, which is the cache working).
    miss = {"Cache-Control": "no-store"}
    variants = [
        ("miss", server, rig.token, miss),
        ("miss-key", server, rig.api_key, miss),
        ("hit", server, rig.token, {}),
    ]
    if rig.before_ref:
        before = rig.before()
        variants.insert(0, ("miss-before", before, rig.before_token, miss))
        variants.append(("hit-before", before, rig.before_token, {}))
    rows = []
    # Every variant at one concurrency before the next: a variant measured
    # right after a 64-way run of the same server would pay for its heap.
    for round_ in range(1, options.rounds + 1):
        # Each round starts one variant later: none always runs first, or
        # always just after switching from the other server.
        shift = (round_ - 1) % len(variants)
        ordered = variants[shift:] + variants[:shift]
        for level in options.concurrency:
            for variant, target, credential, extra in ordered:
                headers = {
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {credential}",
                    **extra,
                }
                request = http_request("POST", "/graphql", target.port, body, headers)
                rows += [
                    {"variant": variant, **row}
                    | ({"round": round_} if options.rounds > 1 else {})
                    for row in http_load(
                        rig,
                        options,
                        target,
                        request,
                        summary_check,
                        concurrency=(level,),
                    )
                ]
    return rows


@scenario(
    "spend",
    "budgets and the ledger: CPU per summarize (a miss) with the ledger only, "
    "with budgets in memory and in Redis (and the --before server); then two "
    "replicas sharing Redis and a database, a budget of k worst-case calls and "
    "20k concurrent calls: admitted, refused, ledger rows, over-spend",
)
def spend(rig: Rig, options: Options) -> list[dict]:
    from bench import spend as spend_bench

    rows = spend_bench.micro_rows()
    rows += spend_bench.cpu_rows(rig, options)
    return [*rows, spend_bench.proof_row(options)]


# --- login (issue 13) -----------------------------------------------------

LOGIN_CASES = {
    # variant: (username, password, expected outcome)
    "ok": ("test_user", "1234", "ok"),
    "wrong-password": ("test_user", "not-the-password", "UNAUTHENTICATED"),
    "unknown-user": ("nobody-at-all", "1234", "UNAUTHENTICATED"),
    "disabled-user": ("bench-disabled", "a-good-long-password", "UNAUTHENTICATED"),
}


@scenario(
    "login",
    "login's latency and CPU for a good login, a wrong password, an unknown user "
    "and a disabled user: the three refusals should not be told apart by time",
)
def login_timing(rig: Rig, options: Options) -> list[dict]:
    server = rig.api()
    admin = {"Content-Type": "application/json", "Authorization": f"Bearer {rig.token}"}
    for query in (
        'mutation { createUser(username: "bench-disabled", '
        'password: "a-good-long-password") { id } }',
        'mutation { updateUser(username: "bench-disabled", disabled: true) { id } }',
    ):
        status, answer = http_json(
            server.port, "POST", "/graphql", graphql_body(query, {}), admin
        )
        if status != 200 or (answer.get("errors") and "exists" not in str(answer)):
            raise ServerFailed(f"setting up the login scenario: {answer}")
    rows = []
    for variant, (username, password, expected) in LOGIN_CASES.items():
        body = graphql_body(LOGIN_QUERY, {"username": username, "password": password})
        headers = {"Content-Type": "application/json"}
        request = http_request("POST", "/graphql", server.port, body, headers)
        rows += [
            {"variant": variant, **row}
            for row in http_load(
                rig, options, server, request, _login_check(expected), concurrency=(1,)
            )
        ]
    return rows


def _login_check(expected: str) -> Callable[[bytes], str | None]:
    def check(body: bytes) -> str | None:
        answer = json.loads(body)
        codes = [e["extensions"]["code"] for e in answer.get("errors") or []]
        outcome = codes[0] if codes else "ok"
        return None if outcome == expected else f"{outcome}, not {expected}"

    return check


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        direct,
        floor,
        baseline,
        summarize,
        spend,
        login_timing,
        stream,
        capacity.slow_upstream,
        capacity.memory_after_requests,
        litellm.litellm,
        embedded,
    )
}
