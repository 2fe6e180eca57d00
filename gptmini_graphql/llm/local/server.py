"""The embedded model as an OpenAI-compatible server of ours, in its own process.

`serve` starts it as a child (`llm serve`: serve.py; supervised by
process.py) and talks to it over a Unix socket; compose and Kubernetes run it
as a service of its own. Either way llama.cpp's native code never runs inside
the API's process. The request body is request_body.py's, the answers'
shapes replies.py's, the model itself engine.py's.

It speaks the slice of the Chat Completions protocol that our tasks use, so
the upstream's client (llm/chat_client.py) cannot tell it from any other:

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
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gptmini_graphql.llm.answers import FinishReason, TokenUsage
from gptmini_graphql.llm.local.chat import (
    ChatRequest,
    InvalidRequestError,
    ModelUnavailableError,
    QueueFullError,
)
from gptmini_graphql.llm.local.disconnect import unless_disconnected
from gptmini_graphql.llm.local.engine import LocalModel
from gptmini_graphql.llm.local.jobs import Generation
from gptmini_graphql.llm.local.model_file import check_model_file
from gptmini_graphql.llm.local.replies import (
    Reply,
    error,
    error_body,
    sse,
    validation_error,
)
from gptmini_graphql.llm.local.request_body import ChatCompletionBody
from gptmini_graphql.settings import Settings

logger = logging.getLogger("gptmini_graphql.llm")


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
            loaded = await asyncio.shield(loading)
            if loaded is not None:
                await asyncio.to_thread(loaded.close)

    def _load(self) -> LocalModel | None:
        """The model, loaded and warm (None when it failed: `load_error` says
        why), and `self.model` once it can answer."""
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
            return None
        self.model = model
        return model

    async def chat_completions(self, request: Request) -> Response:
        try:
            payload = await request.json()
        except ValueError:
            return error(400, "The request body is not valid JSON.")
        try:
            body = ChatCompletionBody.model_validate(payload)
        except ValidationError as exc:
            return validation_error(exc)
        model = self.model
        if model is None:
            return self._not_ready()
        reply = Reply(
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
            completion = await unless_disconnected(request, model.complete(chat))
        except QueueFullError as exc:
            return error(
                429,
                str(exc),
                "rate_limit_error",
                "rate_limit_exceeded",
                headers={"Retry-After": str(exc.retry_after)},
            )
        except InvalidRequestError as exc:
            return error(400, str(exc), code=exc.code, param=exc.param)
        except ModelUnavailableError as exc:
            return error(503, str(exc), "server_error", headers={"Retry-After": "5"})
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
        reply: Reply,
        include_usage: bool,
    ) -> Response:
        # Enter here, not in the body: errors found before the first token
        # (queue full, prompt too long) still get their own status code.
        stack = AsyncExitStack()
        generation = await unless_disconnected(
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
        reply: Reply,
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        started = time.perf_counter()
        # Leaving this block (also when a disconnect cancels the response)
        # stops the generation.
        async with stack:
            yield sse(reply.chunk({"role": "assistant", "content": ""}))
            try:
                async for piece in generation:
                    yield sse(reply.chunk({"content": piece}))
            except ModelUnavailableError as exc:
                yield sse(error_body(str(exc), "server_error"))
                return
            except Exception:  # the worker has logged it; the client gets no details
                yield sse(error_body("The local model failed.", "server_error"))
                return
            yield sse(reply.chunk({}, generation.finish_reason))
            if include_usage:
                yield sse(reply.usage_chunk(generation.usage))
            yield sse("[DONE]")
        assert generation.finish_reason is not None
        _log_completion(
            generation.usage, generation.finish_reason, started, stream=True
        )

    def _not_ready(self) -> JSONResponse:
        if self.load_error is not None:
            return error(503, "The local model failed to load.", "server_error")
        return error(
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


def _log_completion(
    usage: TokenUsage, finish_reason: FinishReason, started: float, *, stream: bool
) -> None:
    seconds = time.perf_counter() - started
    logger.info(
        "local completion",
        extra={
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "finish_reason": finish_reason.value,
            "stream": stream,
            "latency_ms": round(seconds * 1000),
            "tokens_per_second": round(usage.completion_tokens / seconds, 1)
            if seconds > 0
            else None,
        },
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error(exc.status_code, exc.detail, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after this, so the server logs the traceback.
    return error(500, "The local model failed.", "server_error")


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
