"""The scenarios `python -m bench` runs, in order. Add one with `@scenario`:
a function of the rig (the servers) and the options, returning result rows.
Rows are dicts; the table shows the columns it knows and the JSON keeps all."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from bench.fake_upstream import COMPLETION
from bench.load import http_request, measure, own_cpu_seconds, run
from bench.servers import Rig, Server
from bench.workload import SUMMARIZE_QUERY, TEXT, chat_body, graphql_body


@dataclass(frozen=True)
class Options:
    concurrency: tuple[int, ...]
    warmup: float
    duration: float


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    run: Callable[[Rig, Options], list[dict]]


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, description: str):
    def register(run: Callable[[Rig, Options], list[dict]]):
        SCENARIOS[name] = Scenario(name, description, run)
        return run

    return register


def _http_load(
    rig: Rig,
    options: Options,
    server: Server,
    request: bytes,
    check: Callable[[bytes], str | None],
) -> list[dict]:
    """The same request at each concurrency; CPU of the server, the upstream
    behind it (if another process) and this load generator."""
    cpu = {"server": server.cpu_seconds}
    upstream = rig.upstream()
    if upstream is not server:
        cpu["upstream"] = upstream.cpu_seconds
    cpu["client"] = own_cpu_seconds
    return [
        run(
            measure(
                port=server.port,
                request=request,
                concurrency=concurrency,
                warmup=options.warmup,
                duration=options.duration,
                check=check,
                cpu=cpu,
            )
        )
        for concurrency in options.concurrency
    ]


def _json_check(key: str) -> Callable[[bytes], str | None]:
    def check(body: bytes) -> str | None:
        try:
            answer = json.loads(body)
        except ValueError:
            return f"not JSON: {body[:200]!r}"
        if "errors" in answer:
            return f"errors: {answer['errors']!r}"[:300]
        if key not in answer:
            return f"no {key!r}: {body[:200]!r}"
        return None

    return check


@scenario("direct", "the chat completion sent to the fake upstream directly (floor)")
def direct(rig: Rig, options: Options) -> list[dict]:
    upstream = rig.upstream()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    request = http_request(
        "POST", "/v1/chat/completions", upstream.port, chat_body(TEXT), headers
    )
    return _http_load(rig, options, upstream, request, _json_check("choices"))


@scenario("baseline", "bare Starlette + openai SDK, same upstream call (reference)")
def baseline(rig: Rig, options: Options) -> list[dict]:
    server = rig.baseline()
    body = json.dumps({"text": TEXT}).encode()
    headers = {"Content-Type": "application/json"}
    request = http_request("POST", "/summarize", server.port, body, headers)
    return _http_load(rig, options, server, request, _json_check("text"))


@scenario("summarize", "authenticated summarize through our server (GraphQL)")
def summarize(rig: Rig, options: Options) -> list[dict]:
    server = rig.api()
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {rig.token}",
    }
    body = graphql_body(SUMMARIZE_QUERY, {"text": TEXT})
    request = http_request("POST", "/graphql", server.port, body, headers)
    return _http_load(rig, options, server, request, _summary_check)


def _summary_check(body: bytes) -> str | None:
    """No GraphQL errors, and the answer came from the fake upstream."""
    if problem := _json_check("data")(body):
        return problem
    summary = (json.loads(body)["data"] or {}).get("summarize") or {}
    if summary.get("model") != COMPLETION["model"]:
        return f"not the fake upstream's answer: {body[:200]!r}"
    return None
