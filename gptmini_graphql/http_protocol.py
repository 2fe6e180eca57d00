"""uvicorn's HTTP/1.1 protocol (httptools), with a response's head and the
start of its body sent in one write.

uvicorn writes the status line and headers as soon as the app sends
`http.response.start`, and the body with `http.response.body`: two sends on
the socket for every response, where one would do (each a system call and,
on loopback, a delivery to the reader: a sixth of a cache hit's CPU went to
the two). Here a request's first write is held until its second, and both
go out together; a first write that no second follows in the same turn of
the event loop (a stream's head, before it waits for its first event; a
`100 Continue`, before the body it asks for) goes out alone at the end of
that turn, as late as the app's next wait would have let it out anyway.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class OneWriteHTTPProtocol(HttpToolsProtocol):
    """Pass to uvicorn as `http=`."""

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        if self.cycle is not before:  # a request (an upgrade makes none)
            self.cycle.transport = HeadWithBody(self.transport, self.loop)  # type: ignore[assignment]


class HeadWithBody:
    """The transport as one request's cycle writes to it (write, close,
    is_closing: all the cycle uses; the rest is the transport's own)."""

    __slots__ = ("_held", "_loop", "_transport", "_wrote")

    def __init__(
        self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._wrote = False

    def write(self, data: bytes) -> None:
        if not self._wrote:
            self._wrote = True
            self._held = data
            self._loop.call_soon(self._flush)
            return
        if self._held is not None:
            data, self._held = self._held + data, None
        self._transport.write(data)

    def _flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            if not self._transport.is_closing():  # the client left meanwhile
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
