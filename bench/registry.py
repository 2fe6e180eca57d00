"""What a scenario is, and the load every HTTP scenario runs through.

A scenario is a function of the rig (the servers) and the options, returning
result rows: dicts whose keys the table shows when it knows them (the JSON
keeps all). `bench/scenarios.py` says which run, in which order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from bench.fake_upstream import COMPLETION
from bench.load import measure, own_cpu_seconds, run
from bench.rig import Rig
from bench.servers import Server


@dataclass(frozen=True)
class Options:
    concurrency: tuple[int, ...]
    warmup: float
    duration: float
    quick: bool = False
    # Times the summarize variants are measured, interleaved: on a shared
    # machine, the median of a few rounds is steadier than one window.
    rounds: int = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    run: Callable[[Rig, Options], list[dict]]


def scenario(name: str, description: str):
    """Make a function of (rig, options) a Scenario of this name."""

    def make(run: Callable[[Rig, Options], list[dict]]) -> Scenario:
        return Scenario(name, description, run)

    return make


def http_load(
    rig: Rig,
    options: Options,
    server: Server,
    request: bytes,
    check: Callable[[bytes], str | None],
    *,
    concurrency: tuple[int, ...] | None = None,
    first: Callable[[bytes], bool] | None = None,
    upstream: Server | None = None,
    warmup: float | None = None,
) -> list[dict]:
    """The same request at each concurrency (the options' unless given); CPU of
    the server, the upstream behind it (the rig's fast one unless given; none
    if it is the server) and this load generator. `first`: a stream's first
    event, for time to first token."""
    cpu = {"server": server.cpu_seconds}
    upstream = upstream or rig.upstream()
    if upstream is not server:
        cpu["upstream"] = upstream.cpu_seconds
    cpu["client"] = own_cpu_seconds
    return [
        run(
            measure(
                port=server.port,
                request=request,
                concurrency=level,
                warmup=options.warmup if warmup is None else warmup,
                duration=options.duration,
                check=check,
                cpu=cpu,
                first=first,
            )
        )
        for level in concurrency or options.concurrency
    ]


def json_check(key: str) -> Callable[[bytes], str | None]:
    """A body is JSON, without GraphQL errors, with this key."""

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


def summary_check(body: bytes) -> str | None:
    """No GraphQL errors, and the answer came from the fake upstream."""
    if problem := json_check("data")(body):
        return problem
    summary = (json.loads(body)["data"] or {}).get("summarize") or {}
    if summary.get("model") != COMPLETION["model"]:
        return f"not the fake upstream's answer: {body[:200]!r}"
    return None
