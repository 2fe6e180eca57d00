"""Shutdown with streams open: how long they may still hold the process.

A server finishes open responses before the app's lifespan hears of
shutdown, so a stream that never ends kept the process alive. So the app
listens for the signal itself: on SIGTERM (or SIGINT), plain requests finish
as they would; streams may go on for SHUTDOWN_GRACE_SECONDS, then each gets
one last SERVER_SHUTTING_DOWN error and ends, its upstream response closed.
`serve` tells uvicorn to cut whatever is left HARD_STOP_MARGIN_SECONDS later,
so the process exits well inside Kubernetes' 30 s.
"""

from __future__ import annotations

import asyncio
import math
import signal
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

from gptmini_graphql.errors import ServerShuttingDown

SignalHandler = Callable[[int, FrameType | None], object]

T = TypeVar("T")

MESSAGE = "The server is shutting down; start the stream again to continue."
HARD_STOP_MARGIN_SECONDS = 5


def hard_stop_seconds(grace_seconds: float) -> int:
    """How long the server may wait for open responses in all (uvicorn's
    timeout_graceful_shutdown): the streams' grace, then a margin."""
    return math.ceil(grace_seconds) + HARD_STOP_MARGIN_SECONDS


class _Stream:
    """One guarded stream: the task reading it, and whether that task is
    waiting for the stream's next event right now."""

    __slots__ = ("cut", "task", "waiting")

    def __init__(self) -> None:
        self.task: asyncio.Task[object] | None = None
        self.waiting = False
        self.cut = False


class Drain:
    def __init__(self) -> None:
        self.closing = False
        self._streams: set[_Stream] = set()
        self._timer: asyncio.TimerHandle | None = None

    def begin(self, grace_seconds: float) -> None:
        """Shutdown has begun: streams end `grace_seconds` from now."""
        if self._timer is None and not self.closing:
            self._timer = asyncio.get_running_loop().call_later(
                grace_seconds, self.close_streams
            )

    def close_streams(self) -> None:
        self.closing = True
        for stream in self._streams:
            if stream.waiting and stream.task is not None:
                stream.cut = True
                stream.task.cancel()  # interrupts the wait for the next event

    async def guard(self, events: AsyncIterator[T]) -> AsyncGenerator[T, None]:
        """`events` until they end, or SERVER_SHUTTING_DOWN once streams close.

        Only the wait for the next event is interrupted, never the consumer
        sending one. Two flags per event rather than a timeout scope: this
        runs for every token of every stream.
        """
        stream = _Stream()
        # Found once: a stream is read by one task (its response's, or its
        # WebSocket operation's), and finding it for every event cost more
        # than the rest of the guard.
        stream.task = task = asyncio.current_task()
        self._streams.add(stream)
        try:
            while not self.closing:
                stream.waiting = True
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    # Cancelled by close_streams alone (as asyncio.timeout
                    # tells its own cancellation from anyone else's).
                    if stream.cut and task is not None and task.uncancel() == 0:
                        break
                    raise
                finally:
                    stream.waiting = False
                yield event
        finally:
            self._streams.discard(stream)
        raise ServerShuttingDown(MESSAGE)


@contextmanager
def on_shutdown_signals(drain: Drain, grace_seconds: float) -> Iterator[None]:
    """While the app runs, SIGTERM and SIGINT also begin `drain`; the
    server's own handler still runs right after, as it did before.

    Only a server's handler is chained (uvicorn's, in each of its workers),
    so the signal keeps its meaning; off the main thread (a test client's
    lifespan) the signals are not ours to hear.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    chained: dict[int, tuple[SignalHandler, SignalHandler]] = {}
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)
        if not callable(previous):
            continue  # the default action, or ignored: leave it so

        def handler(
            signum: int,
            frame: FrameType | None,
            previous: SignalHandler = previous,
        ) -> None:
            loop.call_soon_threadsafe(drain.begin, grace_seconds)
            previous(signum, frame)

        signal.signal(number, handler)
        chained[number] = (handler, previous)
    try:
        yield
    finally:
        for signum, (ours, theirs) in chained.items():
            if signal.getsignal(signum) is ours:
                signal.signal(signum, theirs)
