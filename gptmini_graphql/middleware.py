"""HTTP guards in front of every route: a body size limit, CSRF prevention,
security headers, and cancelling the work of a client that left (the request
id lives in logging.py, CORS is Starlette's).

Pure ASGI, not BaseHTTPMiddleware: they run on every request and stream
responses through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptmini_graphql.errors import (
    CSRF_REFUSED,
    PAYLOAD_TOO_LARGE,
    ServerShuttingDown,
    error_body,
)

# Content types a page may send cross-site without a CORS preflight.
SIMPLE_CONTENT_TYPES = frozenset(
    {"text/plain", "application/x-www-form-urlencoded", "multipart/form-data"}
)
PREFLIGHT_HEADERS = ("x-apollo-operation-name", "apollo-require-preflight")


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps(error_body(message, code))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


class BodySizeLimit:
    """413 before any parsing, whether the size is declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"The request body is over the limit of {self.max_bytes} bytes."
        declared, transfer_encoding = header_values(scope, *_FRAMING)
        if declared is not None and declared.isdigit():
            if int(declared) > self.max_bytes:
                await _refuse(send, 413, message, PAYLOAD_TOO_LARGE)
                return
            if transfer_encoding is None:
                # The server reads exactly the declared length (its HTTP
                # parser frames the body by it): nothing to count, and no
                # wrapped receive and send on every ordinary request.
                await self.app(scope, receive, send)
                return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            incoming = await receive()
            if incoming["type"] == "http.request":
                received += len(incoming.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return incoming

        async def tracking_send(outgoing: Message) -> None:
            nonlocal started
            started = started or outgoing["type"] == "http.response.start"
            await send(outgoing)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await _refuse(send, 413, message, PAYLOAD_TOO_LARGE)


class _TooLarge(Exception):
    pass


class CSRFPrevention:
    """Apollo Server's rule, aimed at browsers: a request a page could send
    cross-site without a CORS preflight (a GET operation, or a POST of a
    simple content type) needs `X-Apollo-Operation-Name` or
    `Apollo-Require-Preflight` — a header only a preflighted request can carry.

    Only requests a browser marks as coming from another site are held to it
    (`Sec-Fetch-Site`, or an `Origin` that is not ours): scripts and servers
    calling the API, which no page can impersonate, need no extra header.
    """

    def __init__(self, app: ASGIApp, path: str, allowed_origins: list[str]) -> None:
        self.app = app
        self.path = path
        self.allowed_origins = frozenset(allowed_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Without either header (even empty) a request is not cross-site
        # (_cross_site): such callers, scripts and servers, pass without
        # their other headers being read.
        if (
            scope["type"] == "http"
            and scope["path"] == self.path
            and header_values(scope, b"sec-fetch-site", b"origin") != [None, None]
        ):
            headers = Headers(scope=scope)
            if self._cross_site(scope, headers) and self._unpreflighted(scope, headers):
                await _refuse(
                    send,
                    400,
                    "This request could have come from another site without a CORS "
                    "preflight: send it with an 'Apollo-Require-Preflight: true' "
                    "header or as application/json.",
                    CSRF_REFUSED,
                )
                return
        await self.app(scope, receive, send)

    def _cross_site(self, scope: Scope, headers: Headers) -> bool:
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return True
        origin = headers.get("origin")
        if origin is None or origin in self.allowed_origins:
            return False
        host = headers.get("host", "")
        return origin not in (f"http://{host}", f"https://{host}")

    @staticmethod
    def _unpreflighted(scope: Scope, headers: Headers) -> bool:
        if any(headers.get(name, "").strip() for name in PREFLIGHT_HEADERS):
            return False
        if scope["method"] == "GET":
            # The GraphiQL page itself is no operation; a query string is.
            return bool(scope.get("query_string"))
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        return scope["method"] == "POST" and (
            not content_type or content_type in SIMPLE_CONTENT_TYPES
        )


class SecurityHeaders:
    """Headers every response carries; HSTS only in production, behind TLS."""

    def __init__(self, app: ASGIApp, *, hsts: bool) -> None:
        self.app = app
        self.headers = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            # GraphiQL's page boots from one inline script and reaches only us.
            (
                b"content-security-policy",
                b"default-src 'self'; script-src 'self' 'unsafe-inline'; "
                b"style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                b"connect-src 'self' ws: wss:; frame-ancestors 'none'",
            ),
        ]
        if hsts:
            self.headers.append(
                (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *self.headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class CancelOnDisconnect:
    """Stop the work of a request whose client has gone away.

    Starlette never cancels an endpoint when its client disconnects, so an
    `analyze` whose caller timed out would keep the model generating for
    nobody. Once the app has read the body, a task of ours owns `receive`:
    it waits for the disconnect and, if the response is not complete by
    then, cancels the request's task; the cancellation reaches the model's
    HTTP call, whose closed connection stops the generation.

    That task (and the queue it fills) starts only once a request has run
    for WATCH_AFTER seconds: most answer sooner (a cache hit in a
    millisecond or two), and a task and a queue for each of them were a
    tenth of a cache hit's CPU. A
    caller that leaves early still stops the work, that much later.

    A request cancelled from outside before it answered (the server's last
    cut at shutdown) gets a coded 503 rather than uvicorn's plain-text 500.
    """

    WATCH_AFTER = 1.0  # seconds

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # What the watcher hears, for the app; made with the watcher.
        messages: asyncio.Queue[Message] | None = None
        started = responded = due = False
        body_read = not _has_body(scope)  # nothing to read ahead
        watcher: asyncio.Task[None] | None = None
        # Found once: each lookup of the running loop is a system call
        # (getpid, in Python 3.11), and current_task would make another.
        loop = asyncio.get_running_loop()
        handling = asyncio.current_task(loop)
        assert handling is not None

        async def watch(messages: asyncio.Queue[Message]) -> None:
            while True:
                message = await receive()
                await messages.put(message)
                if message["type"] == "http.disconnect":
                    break
            if not responded:
                handling.cancel()

        def start_watching() -> asyncio.Queue[Message]:
            nonlocal watcher, messages
            if messages is None:
                messages = asyncio.Queue()
            if watcher is None and not responded:
                watcher = loop.create_task(watch(messages))
            return messages

        def time_is_up() -> None:
            nonlocal due
            due = True
            if body_read:  # else once the app has read it
                start_watching()

        async def app_receive() -> Message:
            nonlocal body_read
            if not body_read:  # the body, read only as fast as the app reads it
                message = await receive()
                if message["type"] == "http.request" and not message.get("more_body"):
                    body_read = True
                    if due:
                        start_watching()
                return message
            # Past the body the app waits for the disconnect itself: the
            # watcher owns `receive` from now on, and tells it too.
            heard = start_watching()
            message = await heard.get()
            if message["type"] == "http.disconnect":
                heard.put_nowait(message)  # for every later call too
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started, responded
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get(
                "more_body", False
            ):
                responded = True
            await send(message)

        timer = loop.call_later(self.WATCH_AFTER, time_is_up)
        try:
            await self.app(scope, app_receive, tracking_send)
        except asyncio.CancelledError:
            if watcher is not None and watcher.done() and not responded:
                handling.uncancel()  # the client left: nobody waits for an answer
            elif not started:
                handling.uncancel()  # shutdown's last cut: say so, with a code
                await _refuse(send, 503, SHUTTING_DOWN, ServerShuttingDown.code)
            else:
                raise
        finally:
            timer.cancel()
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher


SHUTTING_DOWN = "The server is shutting down; retry on another instance."


def _has_body(scope: Scope) -> bool:
    length, transfer_encoding = header_values(scope, *_FRAMING)
    return transfer_encoding is not None or (length is not None and length != "0")


# The headers that say how a request's body is framed.
_FRAMING = (b"content-length", b"transfer-encoding")


def header_values(scope: Scope, *names: bytes) -> list[str | None]:
    """The first value of each of `names` (in lower case, as ASGI gives them),
    in one pass over the request's headers: Starlette's `Headers` scans them
    all again for each name looked up, several times per request here."""
    values: list[str | None] = [None] * len(names)
    for name, value in scope["headers"]:
        if name in names:
            index = names.index(name)
            if values[index] is None:
                values[index] = value.decode("latin-1")
    return values
