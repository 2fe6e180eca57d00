"""The bench's fake OpenAI-compatible upstream, taught the two structured
answers the load test's mix needs: a sentiment for `analyze` and a language
for `translate`'s detection. Everything else is bench.fake_upstream's canned
answer, as fast as it is.

Run: python -m uvicorn loadtest.fake_upstream:app --lifespan off
"""

from __future__ import annotations

import json

from bench import fake_upstream
from bench.fake_upstream import COMPLETION

# Answers by the name of the JSON schema the request asks for.
STRUCTURED = {
    "sentiment": {"sentiment": "positive"},
    "language": {"language": "en"},
}


def _answer(content: dict) -> tuple[dict, dict]:
    choice = COMPLETION["choices"][0]
    message = {**choice["message"], "content": json.dumps(content)}
    body = json.dumps({**COMPLETION, "choices": [{**choice, "message": message}]})
    encoded = body.encode()
    start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(encoded)).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": encoded}


ANSWERS = {name: _answer(content) for name, content in STRUCTURED.items()}


async def app(scope, receive, send) -> None:
    if scope["type"] != "http" or scope["method"] != "POST":
        await fake_upstream.app(scope, receive, send)
        return
    body = await fake_upstream.read_body(receive)
    if b'"json_schema"' in body:
        response_format = json.loads(body).get("response_format") or {}
        name = response_format.get("json_schema", {}).get("name")
        if name in ANSWERS:
            for event in ANSWERS[name]:
                await send(event)
            return

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    await fake_upstream.app(scope, replay, send)
