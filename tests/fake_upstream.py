"""A fake OpenAI-compatible upstream at the HTTP level (an httpx2 transport).

It answers Chat Completions the way OpenAI does and records every request,
so tests can assert both what the server sent and how it read the answer.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2

MODEL_SNAPSHOT = "gpt-4o-mini-2024-07-18"


def chat_completion(
    content: str,
    *,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    cached_tokens: int = 0,
    finish_reason: str = "stop",
    model: str = MODEL_SNAPSHOT,
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        },
    }


def default_content(body: dict[str, Any]) -> str:
    """A plausible answer for whatever the server asked."""
    response_format = body.get("response_format") or {}
    name = response_format.get("json_schema", {}).get("name")
    if name == "sentiment":
        return json.dumps({"sentiment": "positive", "score": 0.8, "confidence": 0.9})
    if name == "translation":
        properties = response_format["json_schema"]["schema"]["properties"]
        answer = {"translation": "Bonjour le monde"}
        if "source_language" in properties:
            answer = {"source_language": "en", **answer}
        return json.dumps(answer)
    return "A short answer."


@dataclass
class Reply:
    """One scripted answer: a JSON body, or an exception, after a delay."""

    status: int = 200
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    error: Exception | None = None


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.replies: deque[Reply] = deque()
        self.default: Callable[[dict[str, Any]], Reply] = lambda body: Reply(
            body=chat_completion(default_content(body))
        )

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        self.requests.append(body)
        reply = self.replies.popleft() if self.replies else self.default(body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.error is not None:
            raise reply.error
        return httpx2.Response(
            reply.status, json=reply.body, headers=reply.headers, request=request
        )

    def http_client(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))


def api_error(
    status: int, message: str, code: str | None = None, **headers: str
) -> Reply:
    error = {"message": message, "type": "error", "code": code}
    return Reply(status=status, body={"error": error}, headers=headers)
