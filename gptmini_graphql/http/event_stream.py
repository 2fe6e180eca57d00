"""A subscription's results on the wire, over graphql-sse's `text/event-stream`
("distinct connections" mode) or Apollo's multipart subscriptions: framed
byte for byte as Strawberry's transports frame them, with less work per event.

Strawberry reads the results in a task of their own and hands each frame to
the response through a one-place queue, so that its heartbeat can be merged
in; it encodes each result whole, `extensions` and all; and Starlette's
StreamingResponse sends the end of the body on its own. Here:

- the response's task reads the results itself, and the heartbeat is a task
  that sends its frame every interval (as Strawberry's does, whether or not
  results flow): no event waits on a queue and a second task; that task
  starts when the first interval is up, so a stream shorter (most) has none;
- one JSON encoder serves the whole stream, not one made per event;
- a result's `extensions` (the budgets, the same on every event of a
  stream) are encoded once, and again only when they change;
- frames made together (an upstream's chunks that arrived together) go out
  in one send, but none waits for a wait (`_send_frames`), and the response
  starts at the stream's first wait rather than before its upstream request;
- the last frame ends the body in the same write.

As Starlette's StreamingResponse does under uvicorn (ASGI 2.3), the client's
disconnect is watched from the start: it cancels the stream, which closes
the resolver's generator at its `await` and the upstream response with it.
"""

from __future__ import annotations

import asyncio
import copy
import json
import types
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Mapping
from contextlib import aclosing, suppress
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.types import Message, Receive, Scope, Send
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.base import BaseView
from strawberry.http.streaming import (
    HTTPStreamTransport,
    MultipartSubscriptionTransport,
    SSETransport,
)
from strawberry.types import ExecutionResult

from gptmini_graphql.read_deadline import away

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
            self._extensions_json = self.encode(extensions)
            self._extensions = _snapshot(extensions, self._extensions_json)
        if list(response) == _DATA_AND_EXTENSIONS:  # most events: no errors
            data = self.encode(response["data"])
            return f'{{"data":{data},"extensions":{self._extensions_json}}}'
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


_DATA_AND_EXTENSIONS = ["data", "extensions"]


def _snapshot(value: object, encoded: str) -> object:
    """A copy of `value` to compare the next result's with (which may be this
    same dict, changed since): read back from its JSON, in C, for a tenth of
    a deep copy. Whatever JSON does not give back equal (a tuple, a key that
    is not a string) compares unequal, so is encoded again: never stale."""
    try:
        return json.loads(encoded)
    except ValueError:  # a view's own encoder, writing more than JSON
        return copy.deepcopy(value)


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
        beat_failed: BaseException | None = None
        beater: asyncio.Task[None] | None = None

        async def watch() -> None:
            nonlocal client_left
            while (await receive())["type"] != "http.disconnect":
                pass
            client_left = True
            task.cancel()

        async def beat() -> None:
            # Alongside the results' sends: each send is one whole frame.
            nonlocal beat_failed
            try:
                while True:
                    if not opening:  # else the response has not started yet
                        await send(_body(self.heartbeat))
                    await asyncio.sleep(self.interval)
            except Exception as error:
                # The response cannot go on: ended, and failed, with this.
                beat_failed = error
                task.cancel()

        def start_beating() -> None:
            nonlocal beater
            beater = loop.create_task(beat())

        # Sent at the stream's first wait (its upstream's answer, mostly),
        # not before its request is on its way, or with its first frame.
        opening: list[Message] = [
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": self.raw_headers,
            }
        ]
        if self.heartbeat_first:
            opening.append(_body(self.heartbeat))
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(watch())
        # The first heartbeat's task is made when it is due, not before.
        first_beat = loop.call_later(self.interval, start_beating)
        try:
            async with aclosing(self.frames) as frames:
                rest = await _send_frames(frames, send, opening)
            first_beat.cancel()
            if beater is not None:
                beater.cancel()
            # The last frames end the body in the same write.
            await send({"type": "http.response.body", "body": rest + self.last})
        except asyncio.CancelledError:
            # Ours alone (the client left, or a heartbeat could not be sent):
            # the stream ends here, quietly if the client left.
            if not (client_left or beat_failed is not None) or task.uncancel() > 0:
                raise
            if beat_failed is not None and not client_left:
                raise beat_failed from None
        finally:
            watcher.cancel()
            first_beat.cancel()
            if beater is not None:
                beater.cancel()


# At most this many frames go out in one send: the first of them waited for
# the others to be made (a tenth of a millisecond each), and the loop for
# them all (the other streams' turn comes between sends).
MAX_FRAMES_PER_SEND = 8


async def _send_frames(
    frames: AsyncIterator[bytes], send: Send, opening: list[Message]
) -> bytes:
    """Send `frames` as they come, several in one send when they are ready
    together, after the messages of `opening` (each taken off it once sent);
    what is left to send when they end is returned.

    Each send is a write to the socket (and a pass through every middleware's
    `send`), and a turn of the loop followed each: a fifth of a stream's CPU
    when every frame had its own. When an upstream's chunks arrive together
    (a fast upstream, a busy server), its frames are made one after another
    without waiting. So each next frame is asked for by hand (`step.send(None)`):
    made without a wait, it joins those ready; if it has to wait, those
    ready go out first, then it is awaited. The first frame (the first
    token) goes out alone, at once, and so does any frame made alone.
    """
    ready: list[bytes] = []
    first = True
    while True:
        step: Any = anext(frames)  # an awaitable: it has send and throw
        try:
            waiting = step.send(None)
        except StopIteration as made:  # made without waiting
            ready.append(made.value)
            if first or len(ready) >= MAX_FRAMES_PER_SEND:
                first = False
                await _open(opening, send)
                await send(_body(b"".join(ready)))
                ready.clear()
                # The other streams' turn: when many chunks came at once,
                # this one would otherwise hold the loop to its end, and
                # theirs wait to their first token.
                await asyncio.sleep(0)
            continue
        except StopAsyncIteration:
            await _open(opening, send)
            return b"".join(ready)
        except Exception:
            # The frames failed: those made before it still go out first.
            if ready:
                await _open(opening, send)
                await send(_body(b"".join(ready)))
            raise
        # The next frame waits (for the upstream, mostly): those ready first.
        thrown: asyncio.CancelledError | None = None
        if ready or opening:
            try:
                # Its read has begun, but the task is not waiting on it while
                # it sends: a client slow to read must not time it out.
                with away():
                    await _open(opening, send)
                    if ready:
                        await send(_body(b"".join(ready)))
                        ready.clear()
            except asyncio.CancelledError as cancelled:
                # For the wait as much as for the send (shutdown, the client
                # leaving, a timeout of the wait's own): the wait hears of it,
                # as it would have alone, and may answer it with a frame.
                thrown = cancelled
            except BaseException:
                # A failed send: the stream ends, unwound as if cancelled.
                with suppress(BaseException):
                    await _finish(step, waiting, asyncio.CancelledError())
                raise
        try:
            ready.append(await _finish(step, waiting, thrown))
        except StopAsyncIteration:
            await _open(opening, send)
            return b"".join(ready)
        if first:
            first = False
            await _open(opening, send)
            await send(_body(ready.pop()))
            await asyncio.sleep(0)


async def _open(opening: list[Message], send: Send) -> None:
    while opening:
        await send(opening[0])
        del opening[0]


@types.coroutine
def _finish(
    step: Any, waiting: Any, error: BaseException | None = None
) -> Generator[Any, Any, Any]:
    """The rest of `await step`, once `step.send(None)` returned `waiting`
    (what it waits on, for the task to wait on); with `error`, thrown in
    first at that wait, as a cancelled task throws CancelledError."""
    if error is not None and isinstance(waiting, asyncio.Future):
        waiting.cancel()  # as Task.cancel cancels the future it waits on
    value = None
    while True:
        if error is None:
            try:
                value = yield waiting
            except BaseException as thrown:
                error = thrown
        try:
            waiting = step.send(value) if error is None else step.throw(error)
        except StopIteration as done:
            return done.value
        error = None


def _body(frame: bytes) -> Message:
    return {"type": "http.response.body", "body": frame, "more_body": True}


# Strawberry's BaseView.encode_json: json.dumps(separators=(",", ":")).
_JSON = json.JSONEncoder(separators=(",", ":"))
_c_encoder: Any = getattr(json.encoder, "c_make_encoder", None)


def _json_encoder() -> Encode:
    """What `_JSON.encode` returns, by the C encoder it would make, made here
    directly, once for a stream: its encode and iterencode (a closure made
    per call, the arguments found again) were half of encoding a small
    event, and making the encoder for each event a fifth of the rest.

    The encoder's `markers` (its check for circular values) are empty again
    after each value it encodes, but not after one it fails on: then the
    next value gets a new encoder, as the next call of `_JSON.encode` would."""
    if _c_encoder is None:  # a Python without the _json module
        return _JSON.encode
    encoder: Any = None

    def encode(value: object) -> str:
        nonlocal encoder
        if encoder is None:
            encoder = _c_encoder(
                {}, _JSON.default, json.encoder.encode_basestring_ascii, None,
                ":", ",", False, False, True,
            )  # fmt: skip
        try:
            return "".join(encoder(value, 0))
        except BaseException:
            encoder = None  # its markers may still hold what it was in
            raise

    return encode


def _encoder(view: ResultView) -> Encode:
    """How `view` encodes JSON: the same, for less, unless it has its own."""
    if getattr(type(view), "encode_json", None) is BaseView.encode_json:
        return _json_encoder()
    return view.encode_json_string


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
    encode = _encoder(view)
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
