"""A subscription's results on the wire, over graphql-sse's `text/event-stream`
("distinct connections" mode) or Apollo's multipart subscriptions: framed
byte for byte as Strawberry's transports frame them, with less work per event.

Strawberry reads the results in a task of their own and hands each frame to
the response through a one-place queue, so that its heartbeat can be merged
in; it encodes each result whole, `extensions` and all; and Starlette's
StreamingResponse sends the end of the body on its own. Here:

- the response's task reads the results itself, and the heartbeat is a task
  that sends its frame every interval (as Strawberry's does, whether or not
  results flow): no event waits on a queue and a second task;
- a result's `extensions` (the budgets, the same on every event of a
  stream) are encoded once, and again only when they change;
- the last frame ends the body in the same write.

As Starlette's StreamingResponse does under uvicorn (ASGI 2.3), the client's
disconnect is watched from the start: it cancels the stream, which closes
the resolver's generator at its `await` and the upstream response with it.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.streaming import (
    HTTPStreamTransport,
    MultipartSubscriptionTransport,
    SSETransport,
)
from strawberry.types import ExecutionResult

Encode = Callable[[object], str]


class ResultView(Protocol):
    """What of the GraphQL view a stream uses (GraphQLEndpoint)."""

    def encode_json_string(self, data: object) -> str: ...

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse: ...

    def _handle_errors(
        self, errors: Any, response_data: GraphQLHTTPResponse
    ) -> None: ...


class ResultJSON:
    """The view's JSON of a stream's results, with `extensions` encoded only
    when they differ from the previous result's."""

    def __init__(self, encode: Encode) -> None:
        self.encode = encode
        self._extensions: object = None
        self._extensions_json = ""
        self._keys: dict[str, str] = {}  # "data", "errors", "extensions"

    def __call__(self, response: GraphQLHTTPResponse) -> str:
        extensions = response.get("extensions")
        if not extensions:
            return self.encode(response)
        if extensions != self._extensions:
            # A copy: the next result's may be this same dict, changed since.
            self._extensions = copy.deepcopy(extensions)
            self._extensions_json = self.encode(extensions)
        members = []
        for key, value in response.items():
            key_json = self._keys.get(key) or self._keys.setdefault(
                key, self.encode(key)
            )
            value_json = (
                self._extensions_json if key == "extensions" else self.encode(value)
            )
            members.append(f"{key_json}:{value_json}")
        return "{" + ",".join(members) + "}"


def next_frame(
    transport: HTTPStreamTransport, encode: Encode
) -> Callable[[GraphQLHTTPResponse], bytes]:
    """How `transport` frames one result (Strawberry's `encode_next`)."""
    result_json = ResultJSON(encode)
    if isinstance(transport, SSETransport):
        return lambda response: transport.encode_event(
            "next", result_json(response)
        ).encode()
    if isinstance(transport, MultipartSubscriptionTransport):

        def payload_json(response: Any) -> str:
            return f'{{"payload":{result_json(response)}}}'

        return lambda response: transport.encode_multipart_data(
            response, payload_json
        ).encode()
    return lambda response: transport.encode_next(response, encode).encode()


class EventStreamResponse(StreamingResponse):
    """The stream of `frames`, with `heartbeat` every `interval` seconds (and
    first, if `heartbeat_first`), ending with `last`."""

    def __init__(
        self,
        frames: AsyncGenerator[bytes, None],
        *,
        status_code: int,
        headers: Mapping[str, str],
        heartbeat: bytes,
        interval: float,
        heartbeat_first: bool,
        last: bytes,
    ) -> None:
        super().__init__(frames, status_code=status_code, headers=headers)
        self.frames = frames
        self.heartbeat = heartbeat
        self.interval = interval
        self.heartbeat_first = heartbeat_first
        self.last = last

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        client_left = False

        async def watch() -> None:
            nonlocal client_left
            while (await receive())["type"] != "http.disconnect":
                pass
            client_left = True
            task.cancel()

        async def beat() -> None:
            # Alongside the results' sends: each send is one whole frame.
            while True:
                await asyncio.sleep(self.interval)
                await send(_body(self.heartbeat))

        watcher = asyncio.create_task(watch())
        beater: asyncio.Task[None] | None = None
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            if self.heartbeat_first:
                await send(_body(self.heartbeat))
            beater = asyncio.create_task(beat())
            async with aclosing(self.frames) as frames:
                async for frame in frames:
                    await send(_body(frame))
                    # The other streams' turn: when many chunks came at once
                    # (a fast upstream, or a busy server), this one would
                    # otherwise hold the loop to its end, and theirs wait
                    # to their first token.
                    await asyncio.sleep(0)
            beater.cancel()
            await send({"type": "http.response.body", "body": self.last})
        except asyncio.CancelledError:
            # Ours alone (the client left): the stream ends here, quietly.
            if not client_left or task.uncancel() > 0:
                raise
        finally:
            watcher.cancel()
            if beater is not None:
                beater.cancel()


def _body(frame: bytes) -> Message:
    return {"type": "http.response.body", "body": frame, "more_body": True}


def respond(
    view: ResultView,
    request: Request,
    results: AsyncGenerator[Any, None],
    transport: HTTPStreamTransport,
    *,
    status_code: int,
    headers: Mapping[str, str],
) -> EventStreamResponse:
    """The response streaming `results` (Strawberry's results of one
    operation) over `transport`."""
    encode = view.encode_json_string
    frame_of = next_frame(transport, encode)

    async def frames() -> AsyncGenerator[bytes, None]:
        async with aclosing(results):
            async for result in results:
                response = await view.process_result(request, result)
                if result.errors:
                    view._handle_errors(result.errors, response)
                yield frame_of(response)

    return EventStreamResponse(
        frames(),
        status_code=status_code,
        headers={**headers, **transport.headers},
        heartbeat=transport.heartbeat_message(encode).encode(),
        interval=transport.heartbeat_interval,
        heartbeat_first=transport.send_initial_heartbeat,
        last=transport.encode_complete().encode(),
    )
