"""A streamed Chat Completions answer read from its HTTP body: the chunks as
parsed JSON, as the openai SDK's `AsyncStream[object]` yielded them, for a
third less CPU per stream (its decoder built an event object per line and
the stream a chain of generators per chunk).

What it keeps of the SDK's stream, so callers (llm/streaming.py) see the
same things: the event-stream format's rules (lines ending in LF, CR or
CRLF; `data:` lines joined; comments skipped; an event dispatched at a
blank line); `[DONE]` ends it, the rest of the body read so the connection
can be kept; an event whose JSON has an `error` raises StreamErrorEvent
with its message; a body that breaks raises APITimeoutError or
APIConnectionError (upstream_errors.py); data that is not JSON raises
ValueError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Protocol

import httpx2

from gptmini_graphql.llm.chat_client import CONNECTION_ERRORS
from gptmini_graphql.llm.upstream_errors import (
    APIConnectionError,
    APITimeoutError,
    StreamErrorEvent,
)

_FAILED_MID_STREAM = "An error occurred during streaming"


class Body(Protocol):
    """A streamed response's body, as httpx2's response reads it (or
    transport.Streamed, as aiohttp's)."""

    def aiter_bytes(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class EventStream:
    """`async with` it to close the response however the reading ends."""

    def __init__(self, response: Body) -> None:
        self.response = response

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.response.aclose()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[Any]:
        # The events parsed here, piece by piece, not by a generator of
        # their own: one less generator to pass through for every chunk.
        body = self.response.aiter_bytes()
        fields = _Fields()
        try:
            async for piece in body:
                for event, data in fields.read(piece):
                    if data.startswith("[DONE]"):
                        async for _ in body:  # read to its end: the connection is kept
                            pass
                        return
                    yield _chunk(event, data)
            for event, data in fields.end():
                if data.startswith("[DONE]"):
                    return
                yield _chunk(event, data)
        except httpx2.TimeoutException as error:
            raise APITimeoutError() from error
        except CONNECTION_ERRORS as error:
            raise APIConnectionError() from error


def _chunk(event: str | None, data: str) -> Any:
    chunk = _json(data)
    if isinstance(chunk, dict) and chunk.get("error"):
        raise _error_event(chunk["error"])
    # Named events (none in Chat Completions) as the SDK gives them.
    return chunk if event is None else {"data": chunk, "event": event}


# json.loads's own C scanner (its default decoder's), called directly: loads,
# decode and raw_decode around it, with two whitespace regexes, were a third
# of decoding a chunk.
_scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # untyped
_WHITESPACE = " \t\n\r"  # what JSON allows around a value


def _json(data: str) -> Any:
    """`json.loads(data)`: the value, when `data` is that value alone; else
    (whitespace around it, not JSON) json.loads itself, and its error."""
    if data and data[0] not in _WHITESPACE and data[-1] not in _WHITESPACE:
        try:
            value, end = _scan_once(data, 0)
        except StopIteration:
            pass
        else:
            if end == len(data):
                return value
    return json.loads(data)


def _error_event(error: Any) -> StreamErrorEvent:
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = _FAILED_MID_STREAM
    return StreamErrorEvent(message, body=error)


class _Fields:
    """The fields of the event being read, line by line, from the pieces of
    the body as they come: (event name, data) of each event dispatched."""

    def __init__(self) -> None:
        self.pending = b""  # an unfinished last line
        self.event: str | None = None
        self.data: list[str] = []
        self.last_id: str | None = None  # once seen, every blank line dispatches
        self.retry: int | None = None

    def read(self, piece: bytes) -> list[tuple[str | None, str]]:
        """The events `piece`, the next piece of the body, dispatches."""
        text = self.pending + piece
        lines = text.splitlines()  # at LF, CR or CRLF, as the format's lines end
        if text.endswith(b"\n"):
            self.pending = b""
        elif lines:
            # An unfinished last line waits for the rest (a CR may be half a CRLF).
            self.pending = lines.pop() + (b"\r" if text.endswith(b"\r") else b"")
        return self._dispatched(lines)

    def end(self) -> list[tuple[str | None, str]]:
        """The events the body's end dispatches."""
        ended = self.pending.endswith(b"\r")
        return self._dispatched([self.pending[:-1]] if ended else [])

    def _dispatched(self, lines: list[bytes]) -> list[tuple[str | None, str]]:
        """The events the blank lines among `lines` (without their ends)
        dispatch."""
        events = []
        for raw in lines:
            if raw.startswith(b"data: "):  # most lines: read without the rest
                self.data.append(raw[6:].decode())
                continue
            line = raw.decode()
            if not line:
                if self.event is not None or self.data or self.last_id is not None:
                    events.append((self.event, "\n".join(self.data)))
                elif self.retry is not None:
                    events.append((None, ""))
                self.event, self.data, self.retry = None, [], None
            elif line.startswith(":"):
                continue  # a comment (a keep-alive)
            else:
                name, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if name == "data":
                    self.data.append(value)
                elif name == "event":
                    self.event = value
                elif name == "id" and "\0" not in value:
                    self.last_id = value
                elif name == "retry" and value.isdigit():
                    self.retry = int(value)
        return events
