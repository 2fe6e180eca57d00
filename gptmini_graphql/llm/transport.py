"""The HTTP transport under each remote upstream's client (chat_client.py):
httpx2's interface, which the client speaks (and the tests' fake upstream
answers in), over aiohttp's connection pool and C parser. A completion's
POST, answered or streamed, also comes as plain values (`post`,
`post_streamed`), skipping httpx2's request and response when the answer
needs neither.

Why not httpx2's own transport: its pool looks at every connection for each
request (at 64 connections, a fifth of our CPU per call went there) and its
HTTP/1.1 parser is pure Python. Through this one a call to the upstream
costs about 0.6 of the CPU (see the commit that brought it).

Why not the openai SDK's `DefaultAioHttpClient`: its error mapping turns a
refused or dropped connection into a timeout (no fallback is tried after a
timeout: the deadline is spent) and lets a garbled response through as
aiohttp's own exception. Here each aiohttp error becomes the httpx2 error
that httpx2's transport raises for the same failure, so the client, and our
error mapping (llm/upstream.py), see what they would see through httpx2's.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Coroutine, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiohttp.abc
import httpx2

# The openai SDK's pool limits, which our upstreams always had.
DEFAULT_CONNECTION_LIMITS = httpx2.Limits(
    max_connections=1000, max_keepalive_connections=100
)

# Read sizes of a body: a whole chat completion is one read; a stream's
# events are handed on as they arrive, whatever their size.
_READ_BYTES = 64 * 1024


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """One aiohttp session (made on first use, on the running loop) for one
    upstream's client; closed with it."""

    def __init__(
        self,
        limits: httpx2.Limits = DEFAULT_CONNECTION_LIMITS,
        *,
        resolver: aiohttp.abc.AbstractResolver | None = None,
    ) -> None:
        """`resolver`: where host names lead (tests send every host to their
        fake upstream's port); by default, DNS."""
        self._limits = limits
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limits.max_connections or 0,
            keepalive_timeout=self._limits.keepalive_expiry,
            ssl=httpx2.create_ssl_context(),  # httpx2's certificates, as before
            resolver=self._resolver,
        )
        # No proxies: a client given a transport ignores HTTP(S)_PROXY, and
        # this session trusts no environment either.
        # Bodies stay encoded: httpx2 decodes them, as it did.
        self._session = aiohttp.ClientSession(
            connector=connector,
            trust_env=False,
            auto_decompress=False,
            request_class=_BodyWrittenAtOnce,
        )
        return self._session

    def _timeout(self, request: httpx2.Request) -> aiohttp.ClientTimeout:
        """httpx2's timeouts (set per request: what its deadline leaves) in
        aiohttp's terms."""
        given = request.extensions.get("timeout", {})
        return aiohttp.ClientTimeout(
            total=None,
            connect=given.get("pool"),
            sock_connect=given.get("connect"),
            sock_read=given.get("read"),
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._session or self._open()
        data: bytes | httpx2.AsyncByteStream | None
        try:
            data = request.content or None
        except httpx2.RequestNotRead:  # a body streamed (uploads): sent chunked
            assert isinstance(request.stream, httpx2.AsyncByteStream)
            data = request.stream
            request.headers.pop("transfer-encoding", None)  # aiohttp's to set
        with _mapped_errors(request):
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=data,
                allow_redirects=False,  # httpx2 follows them, if asked
                compress=False,
                timeout=self._timeout(request),
            )
        return as_httpx2(response, request)

    async def post(
        self, url: str, headers: list[tuple[str, str]], content: bytes, within: float
    ) -> Answer:
        """A POST answered whole, without httpx2's request and response (a
        twentieth of a model call's CPU): `handle_async_request`'s request,
        every timeout `within` seconds, its errors mapped the same way."""
        with _mapped_errors(None):
            async with self._aiohttp_post(
                url, headers, content, within, within
            ) as response:
                body = await response.read()
        return Answer(response.status, response.raw_headers, body)

    async def post_streamed(
        self, url: str, headers: list[tuple[str, str]], content: bytes, within: float
    ) -> aiohttp.ClientResponse:
        """A POST whose answer's body is read as it comes (`Streamed`),
        without httpx2's request and response: `handle_async_request`'s
        request for a stream (connect and write within `within`, reads
        unbounded), its errors mapped the same way."""
        with _mapped_errors(None):
            response: aiohttp.ClientResponse = await self._aiohttp_post(
                url, headers, content, within, None
            )
        return response

    def _aiohttp_post(
        self,
        url: str,
        headers: list[tuple[str, str]],
        content: bytes,
        within: float,
        reads_within: float | None,
    ) -> Any:
        """aiohttp's POST as `handle_async_request` sends it: awaited, its
        response; entered, its response released on leaving."""
        session = self._session or self._open()
        timeout = aiohttp.ClientTimeout(
            total=None, connect=within, sock_connect=within, sock_read=reads_within
        )
        return session.post(
            url,
            headers=headers,
            data=content,
            allow_redirects=False,
            compress=False,
            timeout=timeout,
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def as_httpx2(
    response: aiohttp.ClientResponse, request: httpx2.Request
) -> httpx2.Response:
    """aiohttp's response to `request`, as httpx2's transport returns one:
    its body unread."""
    return httpx2.Response(
        response.status,
        headers=response.raw_headers,
        stream=_Body(response, request),
        request=request,
        extensions={"http_version": b"HTTP/1.1"},
    )


@dataclass(frozen=True, slots=True)
class Answer:
    """A response read whole, its body as sent (still encoded, if it is)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    content: bytes

    def header(self, name: bytes) -> str | None:
        """The first value of header `name` (in lower case), if any."""
        for key, value in self.headers:
            if key.lower() == name:
                return value.decode("latin-1")
        return None


class _BodyWrittenAtOnce(aiohttp.ClientRequest):
    """A request whose body is written when it is sent, not a turn of the
    event loop later.

    aiohttp writes a body in a task of its own, which Python 3.12 starts at
    once (eager_start) and 3.11, ours, on the loop's next turn: behind every
    callback ready by then. Under load that is every other request's work
    (at 64 connections, 64 requests' parsing, auth, budgets: tens of ms), so
    each upstream call went out that much late, all of them together. Here
    the writer's first step runs at once, as 3.12 runs it; for a body that
    fits the socket's buffer, that is all of it."""

    if sys.version_info < (3, 12):

        def write_bytes(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, None]:
            return _Started(super().write_bytes(*args, **kwargs))


class _Started(Coroutine[Any, Any, None]):
    """`coroutine` stepped once now; its task goes on from there (awaiting
    what that step awaits, raising what it raised)."""

    __slots__ = ("_coroutine", "_first")

    def __init__(self, coroutine: Coroutine[Any, Any, None]) -> None:
        self._coroutine = coroutine
        self._first: tuple[str, Any] | None
        try:
            self._first = ("yield", coroutine.send(None))
        except StopIteration:
            self._first = ("return", None)
        except BaseException as error:  # raised in its task, as aiohttp expects
            self._first = ("raise", error)

    def send(self, value: Any) -> Any:
        first = self._first
        if first is None:
            return self._coroutine.send(value)
        self._first = None
        how, what = first
        if how == "yield":
            return what
        if how == "raise":
            raise what
        raise StopIteration

    def throw(self, *error: Any) -> Any:
        self._first = None
        return self._coroutine.throw(*error)

    def close(self) -> None:
        self._coroutine.close()

    def __await__(self) -> Generator[Any, None, None]:
        raise TypeError("run by aiohttp's task, never awaited")


class Streamed:
    """A 2xx response's body as it arrives, as httpx2's response gives it
    (`aiter_bytes`, `aclose`) to llm/sse.py, read straight from aiohttp:
    httpx2's response read each piece through three generators."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        content = self._response.content
        with _mapped_errors(None):
            while chunk := await content.readany():
                yield chunk

    async def aclose(self) -> None:
        _close(self._response)


def _close(response: aiohttp.ClientResponse) -> None:
    """Read to its end, its connection goes back to the pool; else it is
    closed, so the upstream stops generating."""
    if response.content.is_eof():
        response.release()
    else:
        response.close()


class _Body(httpx2.AsyncByteStream):
    """A response's body as it arrives. Closed before its end (a stream the
    caller left), its connection is closed too, so the upstream stops
    generating; read to its end, the connection goes back to the pool."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx2.Request):
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        with _mapped_errors(self._request):
            while chunk := await content.readany():
                yield chunk

    async def aclose(self) -> None:
        _close(self._response)


@contextmanager
def _mapped_errors(request: httpx2.Request | None) -> Iterator[None]:
    """aiohttp's errors as httpx2 raises them for the same failures: the
    client makes APITimeoutError of the timeouts, APIConnectionError of the
    rest (chat_client.py)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as error:
        raise httpx2.ConnectTimeout(str(error), request=request) from error
    except TimeoutError as error:  # aiohttp's ServerTimeoutError is one
        # A read that waited longer than the read timeout (the only other
        # timeout we give aiohttp: `total` is ours, llm/calls.py's deadline).
        raise httpx2.ReadTimeout(str(error), request=request) from error
    except aiohttp.ClientConnectorError as error:  # refused, no such host, TLS
        raise httpx2.ConnectError(str(error), request=request) from error
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientResponseError) as error:
        # Closed before answering, or an answer that is not HTTP.
        raise httpx2.RemoteProtocolError(str(error), request=request) from error
    except (aiohttp.ClientError, OSError) as error:
        # A connection lost while sending or reading, a body cut short.
        raise httpx2.ReadError(str(error), request=request) from error
