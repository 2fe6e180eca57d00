"""A fake OpenAI-compatible upstream as fast as we can make it: a raw ASGI app
with one canned chat.completion, so the bench measures our server, not this.

Run: python -m uvicorn bench.fake_upstream:app --lifespan off --http httptools
"""

from __future__ import annotations

import json

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


# Encoded once: a request costs only the protocol work.
CHAT = _response(200, json.dumps(COMPLETION).encode())
HEALTHY = _response(200, b'{"status":"ok"}')
NOT_FOUND = _response(404, b'{"error":{"message":"not found"}}')


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    # Drain the body so keep-alive connections stay in step.
    message = await receive()
    while message.get("more_body"):
        message = await receive()
    if scope["method"] == "POST" and scope["path"].endswith("/chat/completions"):
        start, body = CHAT
    elif scope["path"] == "/healthz":
        start, body = HEALTHY
    else:
        start, body = NOT_FOUND
    await send(start)
    await send(body)
