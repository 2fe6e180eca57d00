"""A fake OpenAI-compatible upstream at the HTTP level (an httpx2 transport).

It answers Chat Completions the way OpenAI does and records every request,
so tests can assert both what the server sent and how it read the answer.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx2

if TYPE_CHECKING:
    from tests.http_upstream import HTTPUpstream

MODEL_SNAPSHOT = "gpt-4o-mini-2024-07-18"


def chat_completion(
    content: str,
    *,
    prompt_tokens: int = 100,
    completion_tokens: int = 20,
    cached_tokens: int = 0,
    finish_reason: str = "stop",
    model: str = MODEL_SNAPSHOT,
    logprobs: list[tuple[str, float, dict[str, float]]] | None = None,
) -> dict[str, Any]:
    """`logprobs`: (token, logprob, {alternative: logprob}) per token."""
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
                "logprobs": _logprobs(logprobs),
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached_tokens},
        },
    }


def _logprobs(
    entries: list[tuple[str, float, dict[str, float]]] | None,
) -> dict[str, Any] | None:
    if entries is None:
        return None

    def token(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {
        "content": [
            token(text, logprob)
            | {"top_logprobs": [token(t, lp) for t, lp in top.items()]}
            for text, logprob, top in entries
        ]
    }


def default_content(body: dict[str, Any]) -> str:
    """A plausible answer for whatever the server asked (in any structured-output
    mode: the task is known by its system message)."""
    system = body["messages"][0]["content"]
    if "classify the sentiment" in system.lower():
        return json.dumps({"sentiment": "positive"})
    if "Name the language" in system:
        return json.dumps({"language": "en"})
    if "translator" in system or system.startswith("Translate"):
        return "Bonjour le monde"
    return "A short answer."


def format_type(body: dict[str, Any]) -> str | None:
    """The structured-output mode a request asked for, if any."""
    return (body.get("response_format") or {}).get("type")


@dataclass
class Reply:
    """One scripted answer: a JSON body (or `raw` bytes as they are), or an
    exception, after a delay.

    A streamed request gets `chunks` as SSE deltas instead, `chunk_delay`
    apart; `cut_after` breaks the stream after that many chunks, and
    `stream_usage=False` leaves out the final usage chunk.
    """

    status: int = 200
    body: dict[str, Any] | None = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    error: Exception | None = None
    chunks: list[str] = field(default_factory=lambda: ["Once ", "upon ", "a time"])
    chunk_delay: float = 0.0
    cut_after: int | None = None
    stream_usage: bool = True
    finish_reason: str = "stop"
    raw_events: list[bytes] | None = None  # sent instead of the chunks, as they are


def chunk_event(choices: list[dict[str, Any]], usage: dict | None = None) -> bytes:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL_SNAPSHOT,
        "choices": choices,
        "usage": usage,
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


class SSEStream(httpx2.AsyncByteStream):
    """The body of a streamed answer; notes when the client hangs up early."""

    def __init__(self, reply: Reply, upstream: FakeUpstream) -> None:
        self.reply = reply
        self.upstream = upstream
        self.finished = False

    async def __aiter__(self):  # type: ignore[override]
        reply = self.reply
        if reply.raw_events is not None:
            for event in reply.raw_events:
                yield event
            self.finished = True
            return
        for index, text in enumerate(reply.chunks):
            if reply.cut_after is not None and index == reply.cut_after:
                self.finished = True  # the upstream broke it, not the client
                raise httpx2.RemoteProtocolError("peer closed connection mid-stream")
            if reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            delta = (
                {"role": "assistant", "content": text}
                if index == 0
                else {"content": text}
            )
            yield chunk_event([{"index": 0, "delta": delta, "finish_reason": None}])
        yield chunk_event(
            [{"index": 0, "delta": {}, "finish_reason": reply.finish_reason}]
        )
        if reply.stream_usage:
            completion_tokens = len(reply.chunks)
            usage = {
                "prompt_tokens": 10,
                "completion_tokens": completion_tokens,
                "total_tokens": 10 + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0},
            }
            yield chunk_event([], usage)
        yield b"data: [DONE]\n\n"
        self.finished = True

    async def aclose(self) -> None:
        if not self.finished:
            self.upstream.disconnects += 1


class FakeUpstream:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.hosts: list[str] = []  # which upstream each request went to
        self.down: set[str] = set()  # hosts that answer 503 to everything
        self.disconnects = 0  # streams the client closed before their end
        self.replies: deque[Reply] = deque()
        # Replies to requests with these response_format types, before any
        # other: a server that refuses a structured-output mode.
        self.refused_formats: dict[str, Reply] = {}
        # What GET /models lists; None answers 404, as servers without it do.
        self.models: list[str] | None = ["gpt-4o-mini"]
        # Answers GET /models instead of the list (a proxy's page, say).
        self.models_reply: Reply | None = None
        self.model_listings = 0
        self.served: HTTPUpstream | None = None  # over real HTTP, once asked
        self.default: Callable[[dict[str, Any]], Reply] = lambda body: Reply(
            body=chat_completion(default_content(body))
        )

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET" and request.url.path.endswith("/models"):
            return self.list_models(request)
        body = json.loads(request.content)
        self.requests.append(body)
        self.hosts.append(request.url.host)
        if request.url.host in self.down:
            reply = api_error(503, "down for maintenance")
        elif format_type(body) in self.refused_formats:
            reply = self.refused_formats[format_type(body)]  # type: ignore[index]
        else:
            reply = self.replies.popleft() if self.replies else self.default(body)
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.error is not None:
            raise reply.error
        # A stream asked for gets an error status, a redirect or a raw body
        # as any request does.
        if body.get("stream") and reply.status == 200 and reply.raw is None:
            return httpx2.Response(
                200,
                headers={"content-type": "text/event-stream"},
                stream=SSEStream(reply, self),
                request=request,
            )
        if reply.raw is not None:
            return httpx2.Response(
                reply.status, content=reply.raw, headers=reply.headers, request=request
            )
        return httpx2.Response(
            reply.status, json=reply.body, headers=reply.headers, request=request
        )

    def list_models(self, request: httpx2.Request) -> httpx2.Response:
        self.model_listings += 1
        if request.url.host in self.down:
            return httpx2.Response(503, json={"error": {"message": "down"}})
        if (reply := self.models_reply) is not None:
            return httpx2.Response(
                reply.status, content=reply.raw, headers=reply.headers, request=request
            )
        if self.models is None:
            return httpx2.Response(404, json={"error": {"message": "Not Found"}})
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "fake"}
            for name in self.models
        ]
        return httpx2.Response(200, json={"object": "list", "data": data})

    def http_client(self, *, over_http: bool | None = None) -> httpx2.AsyncClient:
        """A client that reaches this upstream: in this process's memory
        (an httpx2 mock transport), or over real HTTP through the server's
        own transport (`over_http`, or FAKE_UPSTREAM=http for a whole run:
        tests/http_upstream.py)."""
        if over_http is None:
            over_http = os.environ.get("FAKE_UPSTREAM") == "http"
        if not over_http:
            return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle))
        from tests.http_upstream import HTTPUpstream

        if self.served is None:
            self.served = HTTPUpstream(self)
        return self.served.http_client()

    def close(self) -> None:
        if self.served is not None:
            self.served.close()


def api_error(
    status: int,
    message: str,
    code: str | None = None,
    *,
    param: str | None = None,
    **headers: str,
) -> Reply:
    error = {"message": message, "type": "error", "param": param, "code": code}
    return Reply(status=status, body={"error": error}, headers=headers)
