"""An httpx2 transport that calls an ASGI app in this process.

httpx2's own ASGITransport collects the whole body before answering and runs
no lifespan; this one streams the body as the app sends it, tells the app
when the client hangs up (so a generation stops), and runs the app's lifespan.
It is how the shared AsyncOpenAI client reaches the embedded model in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx2
from starlette.types import ASGIApp, Message

_END = object()  # the app returned: no more messages


class InProcessTransport(httpx2.AsyncBaseTransport):
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._lifespan: asyncio.Task[None] | None = None
        self._shutdown = asyncio.Event()

    async def start(self) -> None:
        """Run the app's lifespan startup, as a server would."""
        started: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        async def receive() -> Message:
            if not started.done():
                return {"type": "lifespan.startup"}
            await self._shutdown.wait()
            return {"type": "lifespan.shutdown"}

        async def send(message: Message) -> None:
            if not started.done():
                started.set_result(message)

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self._lifespan = asyncio.create_task(self.app(scope, receive, send))
        message = await started
        if message["type"] == "lifespan.startup.failed":
            raise RuntimeError(message.get("message") or "embedded app failed to start")

    async def aclose(self) -> None:
        if self._lifespan is not None:
            self._shutdown.set()
            await self._lifespan
            self._lifespan = None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        body = await request.aread()
        disconnected = asyncio.Event()
        messages: asyncio.Queue[Any] = asyncio.Queue()
        body_sent = False

        async def receive() -> Message:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def run() -> None:
            try:
                await self.app(_scope(request), receive, messages.put)
            except Exception as error:
                await messages.put(error)
            finally:
                await messages.put(_END)

        task = asyncio.create_task(run())
        try:
            start = await _next_message(messages)
        except BaseException:
            # Cancelled (a timeout) before the app answered: let it know.
            _hang_up(disconnected, task)
            raise
        if start is _END or start["type"] != "http.response.start":
            raise httpx2.RemoteProtocolError("embedded app sent no response")
        return httpx2.Response(
            start["status"],
            headers=start.get("headers", []),
            stream=_ResponseBody(messages, disconnected, task),
            request=request,
        )


class _ResponseBody(httpx2.AsyncByteStream):
    def __init__(
        self,
        messages: asyncio.Queue[Any],
        disconnected: asyncio.Event,
        task: asyncio.Task,
    ) -> None:
        self._messages = messages
        self._disconnected = disconnected
        self._task = task
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await _next_message(self._messages)
            if message is _END:
                break
            if message["type"] == "http.response.body":
                if chunk := message.get("body", b""):
                    yield chunk
                if not message.get("more_body", False):
                    break
        self._complete = True

    async def aclose(self) -> None:
        if not self._complete:  # closed early: the client hung up
            _hang_up(self._disconnected, self._task)
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def _next_message(messages: asyncio.Queue[Any]) -> Any:
    message = await messages.get()
    if isinstance(message, Exception):
        raise httpx2.RemoteProtocolError(
            f"embedded app failed: {message!r}"
        ) from message
    return message


def _hang_up(disconnected: asyncio.Event, task: asyncio.Task) -> None:
    """Tell the app its client left; an app still busy is cancelled."""
    disconnected.set()
    if not task.done():
        task.cancel()


def _scope(request: httpx2.Request) -> dict[str, Any]:
    url = request.url
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": url.scheme,
        "path": url.path,
        "raw_path": url.raw_path.split(b"?", 1)[0],
        "query_string": url.query,
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.headers.raw],
        "server": (url.host, url.port or 80),
        "client": ("127.0.0.1", 0),
        "state": {},
    }
