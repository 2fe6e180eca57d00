"""Chat Completions at one OpenAI-compatible base URL: the two requests the
app makes of an upstream (POST /chat/completions, answered or streamed, and
GET /models), in place of the openai SDK's `AsyncOpenAI`.

Why ours: for those two requests the SDK built, retried (never: retries
are ours, llm/upstream.py) and processed each one through layers that cost
about 0.5 ms of CPU per call, and importing it about 48 MB of resident
memory in every API process (issue 17). What it did that callers rely on is
kept: its headers, its reading of an answer (JSON when labelled JSON, else
the text), and its errors, as upstream_errors.py's classes for the same
failures (a status other than 2xx, no answer, no answer in time).

A request goes straight to the transport the HTTP client would choose for
its URL (a proxy's only when one is mounted on it: a client built with its
own transport, as ours are, ignores HTTP(S)_PROXY): the client's own
`send` (auth, cookies, redirects, event hooks) added a tenth to a call's
CPU for nothing we use. A redirect, which the SDK followed, is still
followed, by the client (which drops the API key on the way to another
host).

Through our own transport (transport.py), a completion's POST goes as
plain values and its answer comes back as bytes: an answer that is JSON
is read from them, without httpx2's request and response (4% of a cache
miss's CPU); any other is made httpx2's response and read as before. A
stream's POST goes the same way: a 2xx body not encoded is read straight
from aiohttp's response (transport.Streamed); any other answer is made
httpx2's response.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx2

from gptmini_graphql import __version__
from gptmini_graphql.llm.transport import (
    AiohttpTransport,
    Answer,
    Streamed,
    as_httpx2,
)
from gptmini_graphql.llm.upstream_errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
)

USER_AGENT = f"gptmini-graphql/{__version__}"

# What httpx2's transports raise for a connection that failed (TLS failures
# may come unmapped, as ssl's or anyio's own; the SDK caught those too).
CONNECTION_ERRORS = (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream)

# Request bodies as the SDK (and httpx2) encode JSON; one encoder, made once
# (json.dumps with options makes one per call: 40% of the encoding's cost).
_encode_json = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False
).encode


class ChatClient:
    """One upstream at `base_url` (with its API key, if it needs one),
    reached through `http`: its transport, or the client itself for what
    the transport alone cannot do (redirects). Closing this closes `http`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        http: httpx2.AsyncClient,
    ) -> None:
        # With its trailing slash, as the SDK kept it: the response cache's
        # keys and the logs show it so.
        self.base_url = httpx2.URL(base_url.rstrip("/") + "/")
        self.http = http
        self._completions = self.base_url.join("chat/completions")
        self._models = self.base_url.join("models")
        # The transport (httpx2's private choice, by URL: a proxy's or the
        # client's own) and the headers of every request, found once.
        self._transport = http._transport_for_url(self._completions)
        headers = {
            "Host": self.base_url.netloc.decode("ascii"),
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._headers = [
            (name.encode("ascii"), value.encode()) for name, value in headers.items()
        ]
        # Our own transport takes a completion's POST as plain values.
        self._post: Callable[..., Awaitable[Answer]] | None = None
        self._post_streamed: Callable[..., Awaitable[Any]] | None = None
        if isinstance(self._transport, AiohttpTransport):
            self._post = self._transport.post
            self._post_streamed = self._transport.post_streamed
            self._completions_url = str(self._completions)
            self._header_items = list(headers.items())

    async def complete(self, body: dict[str, Any], *, within: float) -> object:
        """The answer to `body`, read as the SDK read it: parsed JSON when
        labelled JSON (ValueError if it is not), else its text."""
        if self._post is not None:
            return await self._post_completion(body, within)
        response = await self._send(self._completions, body, within, stream=False)
        return _parsed(response)

    async def _post_completion(self, body: dict[str, Any], within: float) -> object:
        """`complete` through our own transport: a JSON answer is read from
        its bytes; anything else (an error status, a redirect, a body
        encoded or not JSON) is made httpx2's response and read as
        `complete` reads one."""
        assert self._post is not None
        content = _encode_json(body).encode()
        headers = [*self._header_items, ("Content-Length", str(len(content)))]
        try:
            answer = await self._post(self._completions_url, headers, content, within)
        except BaseException as error:
            if (ours := _api_error(error)) is None:
                raise
            raise ours from error
        content_type = answer.header(b"content-type") or "*"
        if (
            200 <= answer.status < 300
            and content_type.split(";")[0].endswith("json")
            and answer.header(b"content-encoding") in (None, "identity")
        ):
            return json.loads(answer.content)
        request = self._request(self._completions, body, within, stream=False)
        response = httpx2.Response(
            answer.status,
            headers=list(answer.headers),
            stream=httpx2.ByteStream(answer.content),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )
        return _parsed(await self._through(request, _ready(response), stream=False))

    async def stream(
        self, body: dict[str, Any], *, within: float
    ) -> httpx2.Response | Streamed:
        """The streamed answer to `body`: a 2xx response, its body unread
        (httpx2's, or transport.Streamed through our own transport; llm/sse.py
        reads either, and whoever does must close it). `within` bounds the
        request, not its reads: llm/streaming.py gives each chunk
        LLM_TIMEOUT_SECONDS, however little of the deadline a retry left."""
        if self._post_streamed is not None:
            return await self._stream_through_transport(body, within)
        return await self._send(self._completions, body, within, stream=True)

    async def _stream_through_transport(
        self, body: dict[str, Any], within: float
    ) -> httpx2.Response | Streamed:
        """`stream` through our own transport: a 2xx answer's body is read
        from aiohttp's response as it comes (transport.Streamed); any other
        (an error status, a redirect, a body encoded) is made httpx2's
        response and read as `stream` reads one."""
        assert self._post_streamed is not None
        content = _encode_json(body).encode()
        headers = [*self._header_items, ("Content-Length", str(len(content)))]
        try:
            response = await self._post_streamed(
                self._completions_url, headers, content, within
            )
        except BaseException as error:
            if (ours := _api_error(error)) is None:
                raise
            raise ours from error
        if 200 <= response.status < 300 and response.headers.get(
            "Content-Encoding"
        ) in (None, "identity"):
            return Streamed(response)
        request = self._request(self._completions, body, within, stream=True)
        return await self._through(
            request, _ready(as_httpx2(response, request)), stream=True
        )

    async def models(self, *, within: float) -> object:
        """`GET /models`, read as `complete` reads an answer."""
        response = await self._send(self._models, None, within, stream=False)
        return _parsed(response)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def _send(
        self,
        url: httpx2.URL,
        body: dict[str, Any] | None,
        within: float,
        *,
        stream: bool,
    ) -> httpx2.Response:
        """A response with a 2xx status, read unless `stream`; any other
        status raises APIStatusError, a failed connection APIConnectionError
        (APITimeoutError for one that took too long)."""
        request = self._request(url, body, within, stream=stream)
        answered = self._transport.handle_async_request(request)
        return await self._through(request, answered, stream=stream)

    async def _through(
        self,
        request: httpx2.Request,
        answered: Awaitable[httpx2.Response],
        *,
        stream: bool,
    ) -> httpx2.Response:
        """`_send`'s response, once `answered`: redirects followed, read
        unless `stream`, and its status or failure raised as ours."""
        response: httpx2.Response | None = None
        try:
            response = await answered
            if response.has_redirect_location:  # followed as the client would
                await response.aclose()
                moved = self.http._build_redirect_request(request, response)
                response = await self.http.send(
                    moved, stream=True, follow_redirects=True
                )
            if not stream or not response.is_success:
                await response.aread()
        except BaseException as error:
            # Cancelled, or failed mid-read: its connection goes back now,
            # not when the collector finds the response.
            if response is not None:
                await response.aclose()
            if (ours := _api_error(error)) is None:
                raise
            raise ours from error
        if not response.is_success:
            raise APIStatusError.of(response)
        return response

    def _request(
        self,
        url: httpx2.URL,
        body: dict[str, Any] | None,
        within: float,
        *,
        stream: bool,
    ) -> httpx2.Request:
        """`within`: the seconds to connect, to send, and (unless `stream`)
        to wait for each read (httpx2's timeouts, which its transports take
        per request)."""
        # Given as a stream, a request's content gets no headers of httpx2's
        # making (they are ours, made once): a third of its cost.
        headers = self._headers
        content = b""
        method = "GET"
        if body is not None:
            method = "POST"
            content = _encode_json(body).encode()
            headers = [*headers, (b"Content-Length", b"%d" % len(content))]
        request = httpx2.Request(
            method,
            url,
            headers=headers,
            stream=httpx2.ByteStream(content),
            extensions={
                "timeout": {
                    "connect": within,
                    "read": None if stream else within,
                    "write": within,
                    "pool": within,
                }
            },
        )
        request.read()
        return request


def _api_error(error: BaseException) -> APIConnectionError | None:
    """What a failed request raises instead of `error`: APITimeoutError for
    one that took too long, APIConnectionError for a failed connection, or
    None (the error itself: cancelled, say)."""
    if isinstance(error, httpx2.TimeoutException):
        return APITimeoutError()
    if isinstance(error, CONNECTION_ERRORS):
        return APIConnectionError()
    return None


async def _ready(response: httpx2.Response) -> httpx2.Response:
    return response


def _parsed(response: httpx2.Response) -> object:
    """A read response's body: JSON when labelled JSON (ValueError if it is
    not JSON), else its text (a proxy's page, or JSON labelled otherwise)."""
    content_type = response.headers.get("content-type", "*").split(";")[0]
    if content_type.endswith("json"):
        return json.loads(response.content)
    return response.text
