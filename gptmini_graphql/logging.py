"""One JSON object per log line, each carrying the request id it belongs to."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import re
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else came in through `extra=`
# (but for uvicorn's copy of its message with terminal colours).
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "color_message",
}


# Made once: `json.dumps` with options builds an encoder for every line.
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)


class JSONFormatter(logging.Formatter):
    # The last second a line was logged in, and its text up to the seconds.
    _second: tuple[float, str] = (-1.0, "")

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := request_id_var.get()) is not None:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)

    def _time(self, created: float) -> str:
        """`datetime.fromtimestamp(created, UTC).isoformat(timespec=
        "milliseconds")` (a tenth of the line's cost), the date and time to
        the second made once a second: rounded to microseconds as
        `fromtimestamp` rounds (half to even), then cut to milliseconds."""
        if created < 0:  # before 1970 (a clock gone wrong): as it was
            return datetime.fromtimestamp(created, UTC).isoformat(
                timespec="milliseconds"
            )
        fraction, whole = math.modf(created)
        microseconds = round(fraction * 1e6)
        if microseconds >= 1_000_000:
            whole, microseconds = whole + 1, microseconds - 1_000_000
        cached = self._second  # one read: another thread may replace it
        if cached[0] != whole:
            second = datetime.fromtimestamp(whole, UTC)
            text = second.isoformat(timespec="seconds").removesuffix("+00:00")
            cached = self._second = (whole, text)
        return f"{cached[1]}.{microseconds // 1000:03d}+00:00"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to a private copy of file descriptor 2, the lines requests
    log in one turn of the event loop in one write at its end.

    llama.cpp silences fd 2 (and swaps `sys.stderr`) while it loads a model;
    a copy made beforehand keeps our lines flowing meanwhile.

    A write is a system call, as dear as the rest of the line it writes (a
    tenth of a cache hit's CPU here); under load several requests end in
    one turn of the loop, and their lines go out together, each whole, no
    later than the loop's next wait. Any other line (the server's own:
    starting, stopping) goes out at once, with any held before it, as does
    one logged with no loop running in its thread: once shut down by a
    signal, uvicorn logs its last lines and raises that signal again, which
    ends the process within that turn of the loop.
    """

    def __init__(self) -> None:
        super().__init__(os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8"))
        self._held: list[str] = []
        # The loop whose turn ends with a write of the held lines.
        self._due: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the handler's lock held (Handler.handle).
        try:
            self._held.append(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        loop: asyncio.AbstractEventLoop | None = None
        if request_id_var.get() is not None:  # a request's line
            with contextlib.suppress(RuntimeError):  # no loop in this thread: now
                loop = asyncio.get_running_loop()
        if loop is not None and self._due is loop:
            return
        try:
            if loop is None or self._due is not None:  # now (another loop's too)
                self.flush()
        except Exception:
            self.handleError(record)
        if loop is not None:
            self._due = loop
            loop.call_soon(self._end_of_turn, loop)

    def _end_of_turn(self, loop: asyncio.AbstractEventLoop) -> None:
        self.acquire()
        try:
            if self._due is loop:
                self._due = None
            self.flush()
        finally:
            self.release()

    def flush(self) -> None:
        self.acquire()
        try:
            if self._held and self.stream is not None and not self.stream.closed:
                lines, self._held = "".join(self._held), []
                self.stream.write(lines)  # line-buffered: one write
            super().flush()
        finally:
            self.release()

    def close(self) -> None:
        self.flush()
        super().close()
        self.stream.close()


def configure_logging(level: str) -> None:
    """Our loggers and uvicorn's write JSON to stderr; idempotent."""
    # What a record would otherwise gather on every call, and no line of
    # ours shows (they are all in _RECORD_ATTRIBUTES): the calling frame,
    # found by walking the stack, and the thread's and process's ids and
    # names. Turned off as the logging HOWTO's "Optimization" section says;
    # a quarter of the operation log line's cost.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = _StderrHandler()
    handler.setFormatter(JSONFormatter())
    replaced = set()
    for name in ("gptmini_graphql", "uvicorn"):
        logger = logging.getLogger(name)
        replaced.update(logger.handlers)
        logger.handlers = [handler]
        logger.setLevel(level)
        # Not to the root logger: it would print each line a second time.
        logger.propagate = False
    for old in replaced:
        old.close()


# Client-chosen ids are echoed into headers and logs: keep them short and plain.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Takes `X-Request-ID` from the client (or makes one) and echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # 32 random hex digits, as uuid4().hex but without building a UUID
        # (a quarter of the cost).
        request_id = _incoming_request_id(scope) or os.urandom(16).hex()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("ascii"))

        async def send_with_request_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            request_id_var.reset(token)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _VALID_REQUEST_ID.match(candidate) else None
    return None
