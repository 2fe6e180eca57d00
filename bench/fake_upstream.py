"""A fake OpenAI-compatible upstream as fast as we can make it: a raw ASGI app
with one canned chat.completion, so the bench measures our server, not this.
A request with `"stream": true` gets the same answer as SSE chunks, as OpenAI
sends them: a role chunk, STREAM_DELTAS text deltas, the finish reason, the
usage chunk (`stream_options.include_usage`) and `[DONE]`, with no delay.
BENCH_UPSTREAM_DELAY_MS=200 makes it answer each chat completion 200 ms
late, as a real model would (a stream's first chunk as late);
BENCH_STREAM_DELTAS=2 streams 2 text deltas instead of 20 (the callgrind
harness tells a stream's set-up from its chunks by the difference).

Run: python -m uvicorn bench.fake_upstream:app --lifespan off --http httptools
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os

DELAY_SECONDS = float(os.environ.get("BENCH_UPSTREAM_DELAY_MS") or 0) / 1000

COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    # A dated snapshot, as OpenAI answers: exercises the price-prefix lookup.
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "The committee approved the new transit plan, which adds "
                "night buses and a tram line, funded by a small parking levy.",
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 180,
        "completion_tokens": 27,
        "total_tokens": 207,
        "prompt_tokens_details": {"cached_tokens": 128, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
    "system_fingerprint": "fp_bench",
}


def _response(status: int, body: bytes) -> tuple[dict, dict]:
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


STREAM_DELTAS = int(os.environ.get("BENCH_STREAM_DELTAS") or 20)


def _stream_events() -> list[bytes]:
    base = {key: COMPLETION[key] for key in ("id", "created", "model")}
    base |= {"object": "chat.completion.chunk", "system_fingerprint": "fp_bench"}
    words = COMPLETION["choices"][0]["message"]["content"].split(" ")
    cuts = [round(i * len(words) / STREAM_DELTAS) for i in range(STREAM_DELTAS + 1)]
    pieces = [
        " ".join(words[a:b]) + (" " if b < len(words) else "")
        for a, b in itertools.pairwise(cuts)
    ]

    def chunk(delta: dict, finish_reason: str | None = None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None}
        return base | {"choices": [choice | {"finish_reason": finish_reason}]}

    usage = COMPLETION["usage"] | {
        "completion_tokens": STREAM_DELTAS,
        "total_tokens": COMPLETION["usage"]["prompt_tokens"] + STREAM_DELTAS,
    }
    chunks = [
        chunk({"role": "assistant", "content": "", "refusal": None}),
        *(chunk({"content": piece}) for piece in pieces),
        chunk({}, "stop"),
        base | {"choices": [], "usage": usage},
    ]
    events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]
    return [*events, b"data: [DONE]\n\n"]


# Encoded once: a request costs only the protocol work.
CHAT = _response(200, json.dumps(COMPLETION).encode())
HEALTHY = _response(200, b'{"status":"ok"}')
NOT_FOUND = _response(404, b'{"error":{"message":"not found"}}')
STREAM_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/event-stream")],
}
# One body message (so one HTTP chunk) per SSE event; the last ends the body.
STREAM_BODY = [
    {"type": "http.response.body", "body": event, "more_body": True}
    for event in _stream_events()
] + [{"type": "http.response.body", "body": b"", "more_body": False}]


async def read_body(receive) -> bytes:
    """The whole request body (read, so keep-alive connections stay in step)."""
    message = await receive()
    body = message.get("body", b"")
    while message.get("more_body"):
        message = await receive()
        body += message.get("body", b"")
    return body


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    if scope["method"] == "POST" and scope["path"].endswith("/chat/completions"):
        if DELAY_SECONDS:
            await asyncio.sleep(DELAY_SECONDS)
        if b'"stream": true' in body or b'"stream":true' in body:
            await send(STREAM_START)
            for event in STREAM_BODY:
                await send(event)
            return
        start, body = CHAT
    elif scope["path"] == "/healthz":
        start, body = HEALTHY
    else:
        start, body = NOT_FOUND
    await send(start)
    await send(body)
