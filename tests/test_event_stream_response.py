"""How http/event_stream.py's response sends a stream's frames: several in
one send when they are ready together, never holding one back for a wait;
a cancellation during a send reaching the wait it was meant for; and a
heartbeat that cannot be sent ending the stream with its error."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

import pytest

from gptmini_graphql.http.event_stream import (
    MAX_FRAMES_PER_SEND,
    EventStreamResponse,
    _json_encoder,
)
from gptmini_graphql.read_deadline import ReadDeadline

LAST = b"<end>"

Send = Callable[[dict[str, Any]], Awaitable[None]]


def _response(
    frames: AsyncGenerator[bytes, None], *, interval: float = 60
) -> EventStreamResponse:
    return EventStreamResponse(
        frames,
        status_code=200,
        headers={},
        heartbeat=b"<beat>",
        interval=interval,
        heartbeat_first=False,
        last=LAST,
    )


async def _never_leaves() -> dict[str, Any]:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _run(response: EventStreamResponse, send: Send) -> None:
    # A bound, not a measure: a frame held back for a wait never comes.
    async with asyncio.timeout(10):
        await response({"type": "http"}, _never_leaves, send)


class Bodies:
    """The bodies sent, one item per send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            self.sent.append(message["body"])


def test_frames_ready_together_go_in_one_send_but_none_waits_for_a_wait() -> None:
    bodies = Bodies()
    two_and_three_sent = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        await bodies(message)
        if bodies.sent[-1:] == [b"23"]:
            two_and_three_sent.set()

    async def frames() -> AsyncGenerator[bytes, None]:
        yield b"1"  # the first token: alone, at once
        yield b"2"
        yield b"3"
        # The model, thinking: 2 and 3 go out meanwhile, not with 4.
        await two_and_three_sent.wait()
        yield b"4"

    asyncio.run(_run(_response(frames()), send))

    assert bodies.sent == [b"1", b"23", b"4" + LAST]


def test_a_long_run_of_ready_frames_goes_in_bounded_sends_in_order() -> None:
    bodies = Bodies()
    count = 3 * MAX_FRAMES_PER_SEND + 2

    async def frames() -> AsyncGenerator[bytes, None]:
        for number in range(count):
            yield b"%d," % number

    asyncio.run(_run(_response(frames()), bodies))

    assert b"".join(bodies.sent) == b"".join(b"%d," % n for n in range(count)) + LAST
    assert bodies.sent[0] == b"0,"
    assert all(body.count(b",") <= MAX_FRAMES_PER_SEND for body in bodies.sent)
    assert len(bodies.sent) < count


def test_a_cancellation_during_a_send_reaches_the_wait_it_was_meant_for() -> None:
    """A chunk's timeout (here asyncio.timeout) fires while ready frames
    are being sent: the wait hears of it and answers with a frame, and
    the frames whose send it interrupted still go out, in order."""
    sent: list[bytes] = []
    stuck = asyncio.Event()  # never set: the send for frame 2 never ends

    async def send(message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        if body == b"2":
            await stuck.wait()
        if message["type"] == "http.response.body":
            sent.append(body)

    async def frames() -> AsyncGenerator[bytes, None]:
        yield b"1"
        yield b"2"
        try:
            async with asyncio.timeout(0.05):
                await asyncio.Event().wait()
        except TimeoutError:
            yield b"timed out"

    asyncio.run(_run(_response(frames()), send))

    assert sent == [b"1", b"2timed out" + LAST]


def test_a_heartbeat_that_cannot_be_sent_ends_the_stream_with_its_error() -> None:
    closed = []
    unhandled: list[dict[str, Any]] = []

    class Broken(Exception):
        pass

    async def send(message: dict[str, Any]) -> None:
        if message.get("body") == b"<beat>":
            raise Broken

    async def frames() -> AsyncGenerator[bytes, None]:
        try:
            yield b"1"
            await asyncio.Event().wait()  # the model, thinking
            yield b"2"
        finally:
            closed.append(True)  # as the upstream response is closed

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _, context: unhandled.append(context))
        with pytest.raises(Broken):
            await _run(_response(frames(), interval=0.01), send)
        await asyncio.sleep(0.05)  # any task left over would have ended by now
        gc.collect()  # an unretrieved exception is reported when its task goes

    asyncio.run(main())

    assert closed == [True]
    assert unhandled == []


def test_the_response_starts_at_the_streams_first_wait() -> None:
    """Not before the stream has begun (its upstream request on its way),
    and not only with its first frame: a client sees the stream accepted
    while the model thinks; a multipart stream's first heartbeat with it."""
    sent: list[dict[str, Any]] = []
    started = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.start":
            started.set()

    async def frames() -> AsyncGenerator[bytes, None]:
        assert sent == []  # the stream's own work comes first
        await started.wait()  # the model, thinking
        yield b"1"

    response = _response(frames())
    response.heartbeat_first = True
    asyncio.run(_run(response, send))

    assert [(m["type"], m.get("body")) for m in sent] == [
        ("http.response.start", None),
        ("http.response.body", b"<beat>"),
        ("http.response.body", b"1"),
        ("http.response.body", LAST),
    ]


def test_frames_made_before_the_frames_fail_go_out_before_the_failure() -> None:
    bodies = Bodies()

    class EncodeFailed(Exception):
        pass

    async def frames() -> AsyncGenerator[bytes, None]:
        yield b"1"
        yield b"2"
        yield b"3"
        raise EncodeFailed  # made without a wait, as 2 and 3 were

    with pytest.raises(EncodeFailed):
        asyncio.run(_run(_response(frames()), bodies))

    assert bodies.sent == [b"1", b"23"]


def test_a_stalled_read_times_out_after_its_tasks_time_away() -> None:
    """The read of frame 3 begins while 2 is being sent, a send slower than
    the read's deadline: that time is not the read's, but the read, which
    never ends, still times out on its own time once the send is done."""
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        body = message.get("body", b"")
        if body == b"2":
            await asyncio.sleep(0.3)  # the client, slow to read
        if message["type"] == "http.response.body":
            sent.append(body)

    async def frames() -> AsyncGenerator[bytes, None]:
        deadline = ReadDeadline(0.1)
        try:
            yield b"1"
            yield b"2"
            # As llm/streaming.py reads a chunk.
            deadline.since = deadline.loop.time()
            try:
                await asyncio.Event().wait()  # an upstream that stalls
            except asyncio.CancelledError:
                if deadline.expired():
                    yield b"timed out"
                    return
                raise
        finally:
            deadline.stop()

    asyncio.run(_run(_response(frames()), send))

    assert sent == [b"1", b"2", b"timed out" + LAST]


def test_heartbeats_go_out_while_frames_wait_and_none_after_the_last() -> None:
    """Beats go out between frames while the model thinks; a stream that ends
    as a beat goes out sends none after its last frame, and leaves no task
    behind (the beat's, cancelled, has ended)."""
    bodies = Bodies()
    two_beats = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        await bodies(message)
        if bodies.sent.count(b"<beat>") == 2:
            two_beats.set()

    async def frames() -> AsyncGenerator[bytes, None]:
        yield b"a"
        await two_beats.wait()  # the model, thinking through two beats
        yield b"b"

    async def main() -> None:
        await _run(_response(frames(), interval=0.01), send)
        await asyncio.sleep(0.05)  # a beat left over would have gone out by now
        assert asyncio.all_tasks() == {asyncio.current_task()}

    asyncio.run(main())

    assert bodies.sent == [b"a", b"<beat>", b"<beat>", b"b" + LAST]


def test_a_value_that_fails_to_encode_leaves_the_next_one_encodable() -> None:
    """The stream's one encoder checks for circular values with the ids of
    those it is in; a failure midway leaves them, so the next value gets a
    new encoder (else that value, in them, would be called circular)."""
    encode = _json_encoder()
    event: dict[str, Any] = {"data": {"text": object()}}
    with pytest.raises(TypeError):
        encode(event)
    event["data"]["text"] = "ok"

    assert encode(event) == '{"data":{"text":"ok"}}'
    assert encode(event) == '{"data":{"text":"ok"}}'
