"""`python -m bench --only stream`: completeStream over SSE (20 text deltas)
against the same stream read from the fake upstream directly (the floor of
time to first token) and through bare Starlette + the openai SDK (the
reference for CPU per stream, bench/baseline_app.py's /stream)."""

from __future__ import annotations

import json

from bench.fake_upstream import COMPLETION, STREAM_DELTAS
from bench.load import http_request
from bench.registry import Options, http_load, scenario
from bench.rig import Rig
from bench.workload import STORY, STREAM_QUERY, graphql_body, stream_chat_body

# Streams are long requests: at 64 the machine, not the server, is measured.
STREAM_MAX_CONCURRENCY = 16


@scenario(
    "stream",
    "completeStream over SSE vs the same stream read from the fake upstream "
    "directly and through bare Starlette + openai SDK: time to first token "
    "(ttft) and CPU per stream",
)
def stream(rig: Rig, options: Options) -> list[dict]:
    levels = sorted({min(c, STREAM_MAX_CONCURRENCY) for c in options.concurrency})
    upstream, baseline, server = rig.upstream(), rig.baseline(), rig.api()
    json_headers = {"Content-Type": "application/json"}
    sides = [
        (
            "direct",
            upstream,
            http_request(
                "POST",
                "/v1/chat/completions",
                upstream.port,
                stream_chat_body(STORY),
                {**json_headers, "Authorization": "Bearer bench"},
            ),
            _openai_stream_check,
            _openai_delta,
        ),
        (
            "baseline",
            baseline,
            http_request(
                "POST",
                "/stream",
                baseline.port,
                json.dumps({"prompt": STORY}).encode(),
                json_headers,
            ),
            _baseline_stream_check,
            _baseline_delta,
        ),
        (
            "ours",
            server,
            http_request(
                "POST",
                "/graphql",
                server.port,
                graphql_body(STREAM_QUERY, {"prompt": STORY}),
                {
                    **json_headers,
                    "Accept": "text/event-stream",
                    "Authorization": f"Bearer {server.token}",
                },
            ),
            _graphql_stream_check,
            _graphql_delta,
        ),
    ]
    if rig.before_ref:  # --before REF: that commit's server, same request
        before = rig.before()
        request = http_request(
            "POST",
            "/graphql",
            before.port,
            graphql_body(STREAM_QUERY, {"prompt": STORY}),
            {
                **json_headers,
                "Accept": "text/event-stream",
                "Authorization": f"Bearer {rig.before_token}",
            },
        )
        sides.append(("before", before, request, _graphql_stream_check, _graphql_delta))
    rows = []
    # All sides at one concurrency, then the next: each pair compared was
    # measured close in time; each round starts one side later.
    for round_ in range(1, options.rounds + 1):
        shift = (round_ - 1) % len(sides)
        for level in levels:
            for side, target, request, check, first in sides[shift:] + sides[:shift]:
                rows += [
                    {"variant": side, "side": side, **row}
                    | ({"round": round_} if options.rounds > 1 else {})
                    for row in http_load(
                        rig,
                        options,
                        target,
                        request,
                        check,
                        concurrency=(level,),
                        first=first,
                    )
                ]
    return rows


def _sse_data(body: bytes) -> list[dict]:
    """The JSON of each `data:` line (one event per line in both streams), but
    for OpenAI's `[DONE]` and graphql-sse's empty `complete`."""
    events = []
    for line in body.splitlines():
        if line.startswith(b"data: ") and line[6:].strip() not in (b"", b"[DONE]"):
            events.append(json.loads(line[6:]))
    return events


def _openai_delta(chunk: bytes) -> bool:
    return any(
        event.get("choices") and event["choices"][0]["delta"].get("content")
        for event in _sse_data(chunk)
    )


def _graphql_delta(chunk: bytes) -> bool:
    return any(
        ((event.get("data") or {}).get("completeStream") or {}).get("text")
        for event in _sse_data(chunk)
    )


def _openai_stream_check(body: bytes) -> str | None:
    deltas = sum(_openai_delta(line) for line in body.splitlines())
    if deltas != STREAM_DELTAS or not body.endswith(b"data: [DONE]\n\n"):
        return f"{deltas} deltas, not {STREAM_DELTAS} and [DONE]: {body[-200:]!r}"
    return None


def _graphql_stream_check(body: bytes) -> str | None:
    """Every delta in order, then a last event with the upstream's usage."""
    try:
        events = [event["data"]["completeStream"] for event in _sse_data(body)]
    except (ValueError, KeyError, TypeError):
        return f"not completeStream events: {body[:300]!r}"
    expected = COMPLETION["choices"][0]["message"]["content"]
    text = "".join(event["text"] for event in events)
    last = events[-1] if events else {}
    if (
        not body.endswith(b"event: complete\r\ndata: \r\n\r\n")
        or len(events) != STREAM_DELTAS + 1
        or text != expected
        or not last.get("done")
        or (last.get("usage") or {}).get("completionTokens") != STREAM_DELTAS
    ):
        return f"unexpected stream: {body[-300:]!r}"
    return None


def _baseline_delta(chunk: bytes) -> bool:
    return any(event.get("text") for event in _sse_data(chunk))


def _baseline_stream_check(body: bytes) -> str | None:
    events = _sse_data(body)
    deltas = sum(1 for event in events if event.get("text"))
    usage = events[-1].get("usage") if events else None
    if deltas != STREAM_DELTAS or not usage:
        return f"{deltas} deltas, not {STREAM_DELTAS}, and usage: {body[-200:]!r}"
    return None
