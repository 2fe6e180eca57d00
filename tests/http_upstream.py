"""The fake upstream served over real HTTP/1.1 on the loopback, so the
server's own HTTP client (llm/transport.py: aiohttp under httpx2) is what
reaches it: its connection pool, its parser and its errors.

Every host name leads to this server (a resolver of our own), so
`http://upstream.test/v1` and a fallback's `http://fallback.test/v1` both
arrive here, each with its own Host header, as FakeUpstream expects. What
a `Reply` scripts becomes what a real server does: an `error` drops the
connection unanswered, a stream `cut_after` some chunks drops it mid-body,
and a client that hangs up on a stream is seen as a disconnect.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import aiohttp.abc
import httpx2

from gptmini_graphql.llm.transport import AiohttpTransport
from tests.fake_upstream import FakeUpstream, SSEStream

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Error"}


class _Loopback(aiohttp.abc.AbstractResolver):
    def __init__(self, port: int) -> None:
        self.port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self.port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


class HTTPUpstream:
    """`upstream` answering on a loopback port, from a thread of its own."""

    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.connections = 0  # TCP connections accepted
        self._loop = asyncio.new_event_loop()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10), "the fake upstream's HTTP server did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def http_client(self) -> httpx2.AsyncClient:
        """The server's own kind of client, every host leading here."""
        transport = AiohttpTransport(resolver=_Loopback(self.port))
        return httpx2.AsyncClient(transport=transport, follow_redirects=True)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, sock=self._sock)
        )
        started.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            # Connections still open (kept alive) end with the server.
            tasks = asyncio.all_tasks(self._loop)
            for task in tasks:
                task.cancel()
            self._loop.run_until_complete(
                asyncio.gather(*tasks, return_exceptions=True)
            )
            self._loop.close()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        try:
            while request := await _read_request(reader):
                try:
                    response = await self.upstream.handle(request)
                except httpx2.TransportError:  # Reply(error=...): no answer at all
                    writer.transport.abort()
                    return
                if not await _send(response, reader, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _read_request(reader: asyncio.StreamReader) -> httpx2.Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed its kept-alive connection
    line, *fields = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    method, target, _ = line.split(" ", 2)
    headers = [tuple(field.split(": ", 1)) for field in fields]
    named = {name.lower(): value for name, value in headers}
    body = await reader.readexactly(int(named.get("content-length", 0)))
    url = f"http://{named['host']}{target}"
    return httpx2.Request(method, url, headers=headers, content=body)


async def _send(
    response: httpx2.Response,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> bool:
    """Whether the connection may serve another request."""
    status = response.status_code
    head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
    headers: list[Any] = [
        (name, value)
        for name, value in response.headers.items()
        if name not in ("content-length", "transfer-encoding")
    ]
    stream = response.stream
    if not isinstance(stream, SSEStream):
        body = await response.aread()
        headers.append(("content-length", str(len(body))))
        writer.write(_head(head, headers) + body)
        await writer.drain()
        return True
    headers.append(("transfer-encoding", "chunked"))
    writer.write(_head(head, headers))
    try:
        async for chunk in stream:
            if reader.at_eof() or writer.transport.is_closing():
                break  # the client hung up: aclose counts a disconnect
            writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            await writer.drain()
        else:
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return True
    except httpx2.TransportError:  # cut_after: the body breaks off
        writer.transport.abort()
    finally:
        await stream.aclose()
    return False


def _head(lines: list[str], headers: list[Any]) -> bytes:
    lines = lines + [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
