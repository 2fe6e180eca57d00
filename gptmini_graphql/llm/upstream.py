"""One OpenAI-compatible endpoint: its client (chat_client.py) and model, the retries of a
request to it, its circuit breakers, the structured-output mode it takes, and
what its errors mean to our callers."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any, Literal

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
)

from gptmini_graphql.circuit_breaker import CircuitBreaker
from gptmini_graphql.errors import (
    AppError,
    BadUserInput,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamUnavailable,
)
from gptmini_graphql.llm.chat_client import ChatClient
from gptmini_graphql.llm.malformed import Completion, MalformedAnswer, checked
from gptmini_graphql.llm.resilience import (
    is_outage,
    is_retryable,
    retry_after_seconds,
    retry_wait,
)
from gptmini_graphql.llm.sse import EventStream
from gptmini_graphql.llm.structured import FormatNegotiation, StructuredOutput
from gptmini_graphql.llm.upstream_errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    StreamErrorEvent,
)

logger = logging.getLogger("gptmini_graphql.llm")

# A circuit per kind of request: a server that fails only structured or only
# streamed requests pauses those, and the other tasks go on.
Kind = Literal["text", "structured", "stream"]
KINDS: tuple[Kind, ...] = ("text", "structured", "stream")


# What an upstream answers: a checked completion, or (`stream`) its chunks;
# both as parsed JSON (dicts: building the openai SDK's types cost more than
# the rest of reading them), the chunks unchecked (llm/streaming.py reads them).
Reply = Completion | EventStream


class Upstream:
    """One OpenAI-compatible endpoint: its client, model, retries, breakers
    (one per kind of request) and structured-output mode."""

    def __init__(
        self,
        name: str,
        client: ChatClient,
        model: str,
        *,
        retries: int,
        breaker: Callable[[], CircuitBreaker],
        formats: FormatNegotiation | None = None,
        describe_error: Callable[[APIError], AppError] | None = None,
    ) -> None:
        self.name = name
        self.client = client
        self.model = model
        self.retries = retries
        self.breakers = {kind: breaker() for kind in KINDS}
        self.formats = formats or FormatNegotiation(name)
        # What an upstream error means to our callers, in this upstream's words.
        self.describe_error = describe_error or upstream_error

    def failed(self, kind: Kind, exc: BaseException) -> None:
        """An outage: a server that cannot be reached is down for every kind."""
        if isinstance(exc, APIConnectionError) and not isinstance(exc, APITimeoutError):
            for breaker in self.breakers.values():
                breaker.failed()
        else:
            self.breakers[kind].failed()

    async def ask(
        self,
        body: dict[str, Any],
        output: StructuredOutput[Any] | None,
        *,
        deadline: float,
        stream: bool,
    ) -> Reply:
        """`post`, in the structured-output mode this upstream takes; a mode it
        refuses is replaced by the next one, here and for every later request."""
        while True:
            mode = self.formats.mode
            try:
                return await self.post(
                    output.body(body, mode) if output else body,
                    deadline=deadline,
                    stream=stream,
                )
            except APIStatusError as exc:
                if output is None or not self.formats.refused(mode, exc):
                    raise

    async def post(
        self, body: dict[str, Any], *, deadline: float, stream: bool
    ) -> Reply:
        """The request, retried with backoff while the deadline leaves room."""
        body = {**body, "model": self.model}
        try:
            # Nearly every call ends here.
            return await self._send(body, stream, deadline)
        except APIError as exc:
            if not self.retries or not is_retryable(exc):
                raise
            failed = exc
        return await self._retried(body, stream, deadline, failed)

    async def _retried(
        self, body: dict[str, Any], stream: bool, deadline: float, failed: Exception
    ) -> Reply:
        """The retries after a first attempt that `failed`: tenacity's loop and
        backoff (paid for only here: some 30 µs of CPU per call), stopped
        by our deadline."""
        loop = asyncio.get_running_loop()

        attempts = stop_after_attempt(self.retries + 1)

        def stop(attempt: RetryCallState) -> bool:
            # The attempts are spent, or the next would outlast the request.
            return attempts(attempt) or loop.time() + attempt.upcoming_sleep >= deadline

        retrying = AsyncRetrying(
            retry=retry_if_exception(is_retryable),
            wait=retry_wait,
            stop=stop,
            before_sleep=self._retrying,
            reraise=True,  # the upstream's own error, not tenacity's
        )
        first = True
        async for attempt in retrying:
            with attempt:
                if first:  # made already: tenacity counts it and waits after it
                    first = False
                    raise failed
                return await self._send(body, stream, deadline)
        raise AssertionError("unreachable")

    async def _send(self, body: dict[str, Any], stream: bool, deadline: float) -> Reply:
        # The HTTP client's timeout is what the deadline leaves (callers
        # stop waiting then, too: llm/calls.py).
        within = deadline - asyncio.get_running_loop().time()
        if stream:
            # The response unread (errors raised as for any request); its
            # events are read by sse.py.
            return EventStream(await self.client.stream(body, within=within))
        return await self._completion(body, within)

    def _retrying(self, attempt: RetryCallState) -> None:
        logger.info(
            "retrying upstream",
            extra={
                "upstream": self.name,
                "attempt": attempt.attempt_number,
                "delay_s": round(attempt.upcoming_sleep, 3),
            },
        )

    async def _completion(self, body: dict[str, Any], within: float) -> Completion:
        """One answer, checked: a malformed one raises MalformedAnswer."""
        try:
            completion = await self.client.complete(body, within=within)
        except ValueError as exc:  # a body labelled JSON that is not JSON
            raise MalformedAnswer(
                "The model server sent a malformed answer.", transient=True
            ) from exc
        return checked(completion)


def upstream_error(exc: APIError) -> AppError:
    """Map one upstream error to the error the caller sees; details go to the log."""
    status = exc.status_code if isinstance(exc, APIStatusError) else None
    logger.warning(
        "upstream error",
        extra={
            "error": type(exc).__name__,
            "status": status,
            "code": exc.code,
            "reason": upstream_reason(exc),
        },
    )
    if isinstance(exc, MalformedAnswer):
        return UpstreamError(exc.message)
    if isinstance(exc, APIConnectionError):
        return UpstreamUnavailable("The model server could not be reached.")
    if isinstance(exc, APIStatusError) and status == 429:
        if exc.code == "insufficient_quota":
            return UpstreamUnavailable("The model provider's quota is exhausted.")
        return UpstreamRateLimited(
            "The model provider is rate limiting this server; retry later.",
            retry_after=retry_after_seconds(exc.headers),
        )
    if status in (401, 403):
        # Not their words: OpenAI's name part of the key that was refused.
        return UpstreamError("The model provider rejected this server's credentials.")
    if isinstance(exc, StreamErrorEvent) and is_outage(exc):
        return UpstreamUnavailable("The model server failed in mid-answer.")
    if is_outage(exc) or status in (408, 409):
        return UpstreamUnavailable("The model server failed to answer.")
    # A refusal of the request itself: the upstream's reason helps the caller
    # (which parameter, which limit), so it is shown, cleaned.
    reason = upstream_reason(exc)
    if exc.code == "context_length_exceeded" or _CONTEXT.search(reason or ""):
        return BadUserInput(
            "The text is too long for the model's context window"
            + (f": {reason}" if reason else ".")
        )
    return UpstreamError(
        "The model server refused the request" + (f": {reason}" if reason else ".")
    )


_CONTEXT = re.compile(r"context length|context window", re.IGNORECASE)
# What a reason must not carry to a client: pydantic's echo of the input,
# documentation links, anything shaped like a key.
_PYDANTIC_DETAIL = re.compile(
    r"\s*\[type=[^\]]*\]|\s*For further information visit \S+"
)
# FastAPI's validation error as llama-cpp-python's server sends it: a repr of
# each error (with the input), then a traceback naming files on the server.
_REPR_ERROR = re.compile(r"'loc': \(([^)]*)\), 'msg': (\"[^\"]*\"|'[^']*')")
_TRACEBACK = re.compile(r"\s+File \"")
# Exception names a proxy puts first ("litellm.BadRequestError: OpenAIException - ").
_EXCEPTION_NAMES = re.compile(r"^(?:[\w.]*(?:Error|Exception)\s*[:-]\s*)+")
_SECRET = re.compile(r"\b(sk-|Bearer\s+)[\w\-.*]+")
MAX_REASON_CHARS = 300


def upstream_reason(exc: APIError) -> str | None:
    """The upstream's own words for a refusal, fit to show its caller."""
    body = exc.body if isinstance(exc.body, dict) else None
    if body is None:
        return None
    said = body.get("message")
    if said is None and isinstance(detail := body.get("detail"), list):
        # FastAPI's 422: [{"loc": [...], "msg": ...}, ...]
        said = "; ".join(
            f"{'.'.join(map(str, item.get('loc', [])))}: {item.get('msg')}"
            for item in detail
            if isinstance(item, dict)
        )
    elif said is None:
        said = body.get("detail")
    if not isinstance(said, str) or not said.strip():
        return None
    said = _TRACEBACK.split(said, maxsplit=1)[0]
    if found := _REPR_ERROR.findall(said):
        said = "; ".join(f"{_dotted(loc)}: {msg[1:-1]}" for loc, msg in found)
    said = _EXCEPTION_NAMES.sub("", said.strip())
    said = " ".join(_PYDANTIC_DETAIL.sub("", _SECRET.sub(r"\1…", said)).split())
    if len(said) > MAX_REASON_CHARS:
        said = said[: MAX_REASON_CHARS - 1] + "…"
    return said


def _dotted(loc: str) -> str:
    """`'body', 'response_format', 'type'` as body.response_format.type."""
    return ".".join(part.strip(" '\"") for part in loc.split(","))
