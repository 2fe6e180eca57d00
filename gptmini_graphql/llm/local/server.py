"""The embedded model as an OpenAI-compatible server of ours, in its own process.

`serve` starts it as a child (see `process.py`) and talks to it over a Unix
socket; compose and Kubernetes run it as a service of its own. Either way
llama.cpp's native code never runs inside the API's process.

It speaks the slice of the Chat Completions protocol that our tasks use, so
the shared `AsyncOpenAI` client cannot tell it from any other upstream:

    POST /v1/chat/completions   messages, max_tokens, temperature, stop, seed,
                                response_format (json_schema / json_object),
                                logprobs + top_logprobs (not for streams),
                                stream + stream_options.include_usage
    GET  /v1/models
    GET  /healthz               the process answers
    GET  /readyz                the model is loaded (503 until then)

Errors have OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`:
400 for a request we cannot serve (`context_length_exceeded` among them),
429 with `Retry-After` when the model's queue is full, 503 while it loads.
A client that goes away (disconnect, timeout) stops its generation.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gptmini_graphql.llm.local.engine import (
    ChatRequest,
    Completion,
    Generation,
    InvalidRequestError,
    LocalModel,
    ModelUnavailableError,
    QueueFullError,
    TokenLogprob,
    Usage,
)
from gptmini_graphql.llm.local.model_file import check_model_file
from gptmini_graphql.settings import Settings

logger = logging.getLogger("gptmini_graphql.llm")

T = TypeVar("T")


# --- the request body ------------------------------------------------------


class _Body(BaseModel):
    # Fields of the protocol we do not use (user, metadata, ...) are ignored.
    model_config = ConfigDict(extra="ignore")


class _TextPart(_Body):
    type: Literal["text"]
    text: str


class _Message(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[_TextPart]

    def for_template(self) -> dict[str, str]:
        # Chat templates know "system"; "developer" is OpenAI's newer name for it.
        role = "system" if self.role == "developer" else self.role
        if isinstance(self.content, str):
            return {"role": role, "content": self.content}
        return {"role": role, "content": "".join(p.text for p in self.content)}


class _JsonSchema(_Body):
    name: str
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class _ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: _JsonSchema | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> _ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("json_schema is required when type is 'json_schema'")
        return self


class _StreamOptions(_Body):
    include_usage: bool = False


class ChatCompletionBody(_Body):
    model: str | None = None  # any name is accepted; the answer names our model
    messages: list[_Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    seed: int | None = None
    n: Literal[1] | None = None
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    response_format: _ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    def to_chat_request(self) -> ChatRequest:
        fmt = self.response_format
        return ChatRequest(
            messages=[m.for_template() for m in self.messages],
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=self.top_p or 1.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            presence_penalty=self.presence_penalty or 0.0,
            stop=[self.stop] if isinstance(self.stop, str) else self.stop or [],
            seed=self.seed,
            json_schema=(
                fmt.json_schema.schema_
                if fmt is not None and fmt.json_schema is not None
                else None
            ),
            json_object=fmt is not None and fmt.type == "json_object",
            logprobs=bool(self.logprobs),
            top_logprobs=self.top_logprobs or 0,
        )


# --- the answer --------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    """What every part of one answer carries."""

    id: str
    created: int
    model: str

    def completion(self, completion: Completion) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": completion.text},
                    "logprobs": _logprobs(completion.logprobs),
                    "finish_reason": completion.finish_reason,
                }
            ],
            "usage": _usage(completion.usage),
        }

    def chunk(
        self, delta: dict[str, str], finish_reason: str | None = None
    ) -> dict[str, Any]:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return self._chunk([choice])

    def usage_chunk(self, usage: Usage) -> dict[str, Any]:
        return self._chunk([]) | {"usage": _usage(usage)}

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }


def _logprobs(entries: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if entries is None:
        return None

    def token(text: str, logprob: float) -> dict[str, Any]:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    return {
        "content": [
            token(e.token, e.logprob)
            | {"top_logprobs": [token(t, lp) for t, lp in e.top]}
            for e in entries
        ]
    }


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


def _error_body(
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error(
    status: int,
    message: str,
    kind: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        _error_body(message, kind, code, param), status_code=status, headers=headers
    )


def _validation_error(exc: ValidationError) -> JSONResponse:
    problems = [
        f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
    ]
    first = exc.errors()[0]["loc"]
    return _error(
        400,
        "Invalid request: " + "; ".join(problems[:5]),
        param=".".join(map(str, first)) or None,
    )


def _sse(data: Mapping[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


# --- the server ----------------------------------------------------------------


class _EmbeddedServer:
    def __init__(
        self,
        settings: Settings,
        model: LocalModel | None,
        warm_up_schemas: Iterable[Mapping[str, Any]],
    ) -> None:
        self.settings = settings
        self.model = model
        self.load_error: str | None = None
        self.warm_up_schemas = list(warm_up_schemas)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.model is not None:
            await asyncio.to_thread(self.model.warm_up, self.warm_up_schemas)
            yield
            return
        # A missing file is the common mistake: fail the start-up, loudly.
        check_model_file(self.settings.local_model_path)
        # Load in the background: /healthz answers meanwhile, /readyz says 503.
        loading = asyncio.create_task(asyncio.to_thread(self._load))
        try:
            yield
        finally:
            await asyncio.shield(loading)
            if self.model is not None:
                await asyncio.to_thread(self.model.close)

    def _load(self) -> None:
        settings = self.settings
        try:
            model = LocalModel.load(
                settings.local_model_path,
                context_size=settings.local_context_size,
                threads=settings.local_threads,
                queue_size=settings.local_queue_size,
                repeat_penalty=settings.local_repeat_penalty,
            )
            model.warm_up(self.warm_up_schemas)
        except Exception as exc:
            logger.exception("local model failed to load")
            self.load_error = f"{type(exc).__name__}: {exc}"
            return
        self.model = model

    async def chat_completions(self, request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            return _error(400, "The request body is not valid JSON.")
        try:
            body = ChatCompletionBody.model_validate(payload)
        except ValidationError as exc:
            return _validation_error(exc)
        model = self.model
        if model is None:
            return self._not_ready()
        reply = _Reply(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=self.settings.local_model_name,
        )
        chat = body.to_chat_request()
        started = time.perf_counter()
        try:
            if body.stream:
                include_usage = bool(
                    body.stream_options and body.stream_options.include_usage
                )
                return await self._stream(request, model, chat, reply, include_usage)
            completion = await _unless_disconnected(request, model.complete(chat))
        except QueueFullError as exc:
            return _error(
                429,
                str(exc),
                "rate_limit_error",
                "rate_limit_exceeded",
                headers={"Retry-After": str(exc.retry_after)},
            )
        except InvalidRequestError as exc:
            return _error(400, str(exc), code=exc.code, param=exc.param)
        except ModelUnavailableError as exc:
            return _error(503, str(exc), "server_error", headers={"Retry-After": "5"})
        if completion is None:  # the client left; nobody reads this
            return Response(status_code=499)
        _log_completion(
            completion.usage, completion.finish_reason, started, stream=False
        )
        return JSONResponse(reply.completion(completion))

    async def _stream(
        self,
        request: Request,
        model: LocalModel,
        chat: ChatRequest,
        reply: _Reply,
        include_usage: bool,
    ) -> Response:
        # Enter here, not in the body: errors found before the first token
        # (queue full, prompt too long) still get their own status code.
        stack = AsyncExitStack()
        generation = await _unless_disconnected(
            request, stack.enter_async_context(model.generate(chat))
        )
        if generation is None:
            return Response(status_code=499)
        return StreamingResponse(
            self._events(stack, generation, reply, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    async def _events(
        self,
        stack: AsyncExitStack,
        generation: Generation,
        reply: _Reply,
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        # Leaving this block (also when a disconnect cancels the response)
        # stops the generation.
        async with stack:
            yield _sse(reply.chunk({"role": "assistant", "content": ""}))
            try:
                async for piece in generation:
                    yield _sse(reply.chunk({"content": piece}))
            except ModelUnavailableError as exc:
                yield _sse(_error_body(str(exc), "server_error"))
                return
            except Exception:  # the worker has logged it; the client gets no details
                yield _sse(_error_body("The local model failed.", "server_error"))
                return
            yield _sse(reply.chunk({}, generation.finish_reason))
            if include_usage:
                yield _sse(reply.usage_chunk(generation.usage))
            yield _sse("[DONE]")
        assert generation.finish_reason is not None
        _log_completion(
            generation.usage, generation.finish_reason, started, stream=True
        )

    def _not_ready(self) -> JSONResponse:
        if self.load_error is not None:
            return _error(503, "The local model failed to load.", "server_error")
        return _error(
            503,
            "The local model is still loading.",
            "server_error",
            headers={"Retry-After": "1"},
        )

    async def models(self, request: Request) -> JSONResponse:
        entry = {
            "id": self.settings.local_model_name,
            "object": "model",
            "created": 0,
            "owned_by": "gptmini-graphql",
        }
        return JSONResponse({"object": "list", "data": [entry]})

    async def healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> JSONResponse:
        model = self.model
        if model is not None:
            return JSONResponse(
                {
                    "status": "ready",
                    "model": self.settings.local_model_name,
                    "in_flight": model.in_flight,
                    "capacity": model.capacity,
                }
            )
        if self.load_error is not None:
            return JSONResponse(
                {"status": "failed", "error": self.load_error}, status_code=503
            )
        return JSONResponse({"status": "loading"}, status_code=503)


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Await `work`; if the client disconnects first, cancel it and return None.

    Starlette does not cancel an endpoint when its client goes away, so without
    this a client that timed out would keep the model busy for nothing.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait(
            {task, watcher}, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    return task.result() if task in done else None


async def _disconnected(request: Request) -> None:
    # The body has been read, so the next message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _log_completion(
    usage: Usage, finish_reason: str, started: float, *, stream: bool
) -> None:
    seconds = time.perf_counter() - started
    logger.info(
        "local completion",
        extra={
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "finish_reason": finish_reason,
            "stream": stream,
            "latency_ms": round(seconds * 1000),
            "tokens_per_second": round(usage.completion_tokens / seconds, 1)
            if seconds > 0
            else None,
        },
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return _error(exc.status_code, exc.detail, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this, so the server logs the traceback.
    return _error(500, "The local model failed.", "server_error")


def create_embedded_app(
    settings: Settings,
    model: LocalModel | None = None,
    *,
    warm_up_schemas: Iterable[Mapping[str, Any]] = (),
) -> Starlette:
    """The OpenAI-compatible app; it loads its own model unless given one.

    `warm_up_schemas`: JSON schemas whose grammars are compiled at start-up.
    """
    server = _EmbeddedServer(settings, model, warm_up_schemas)
    return Starlette(
        routes=[
            Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/healthz", server.healthz, methods=["GET"]),
            Route("/readyz", server.readyz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
        lifespan=server.lifespan,
    )


def serve_embedded(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    uds: str | None = None,
    exit_with_stdin: bool = False,
    warm_up_schemas: Iterable[Mapping[str, Any]] = (),
) -> None:
    """Run the embedded model as its own server (`... llm serve`).

    `uds`: listen on this Unix socket instead of host:port (how `serve`
    reaches the model process it supervises). `exit_with_stdin`: stop when
    standard input closes, that is when the supervising process is gone, even
    if it was killed and could not say so.
    """
    import uvicorn

    from gptmini_graphql.logging import RequestIdMiddleware, configure_logging

    configure_logging(settings.log_level)
    if exit_with_stdin:
        threading.Thread(target=_exit_at_end_of_stdin, daemon=True).start()
    uvicorn.run(
        RequestIdMiddleware(
            create_embedded_app(settings, warm_up_schemas=warm_up_schemas)
        ),
        host=host,
        port=port,
        uds=uds,
        log_config=None,
        access_log=False,  # each completion logs its own line
        # A generation in progress stops at the next token once the lifespan
        # closes the model; do not wait for it to finish on its own.
        timeout_graceful_shutdown=2,
    )


def _exit_at_end_of_stdin() -> None:
    while sys.stdin.buffer.read(4096):
        pass
    logger.info("supervisor gone: stopping")
    os.kill(os.getpid(), signal.SIGTERM)
