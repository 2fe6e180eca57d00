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
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

from gptmini_graphql.errors import ServerShuttingDown

T = TypeVar("T")

MESSAGE = "The server is shutting down; start the stream again to continue."
HARD_STOP_MARGIN_SECONDS = 5


def hard_stop_seconds(grace_seconds: float) -> int:
    """How long the server may wait for open responses in all (uvicorn's
    timeout_graceful_shutdown): the streams' grace, then a margin."""
    return math.ceil(grace_seconds) + HARD_STOP_MARGIN_SECONDS


class Drain:
    def __init__(self) -> None:
        self.closing = False
        self._waits: set[asyncio.Timeout] = set()
        self._timer: asyncio.TimerHandle | None = None

    def begin(self, grace_seconds: float) -> None:
        """Shutdown has begun: streams end `grace_seconds` from now."""
        if self._timer is None and not self.closing:
            self._timer = asyncio.get_running_loop().call_later(
                grace_seconds, self.close_streams
            )

    def close_streams(self) -> None:
        self.closing = True
        now = asyncio.get_running_loop().time()
        for wait in self._waits:
            wait.reschedule(now)  # interrupts the wait for the next event

    async def guard(self, events: AsyncIterator[T]) -> AsyncIterator[T]:
        """`events` until they end, or SERVER_SHUTTING_DOWN once streams close."""
        while not self.closing:
            # Only the wait for the next event is interrupted, never the
            # consumer sending one: a timeout scope per event costs no task.
            try:
                async with asyncio.timeout(None) as wait:
                    self._waits.add(wait)
                    try:
                        event = await anext(events)
                    finally:
                        self._waits.discard(wait)
            except StopAsyncIteration:
                return
            except TimeoutError:
                if not wait.expired():
                    raise
                break
            yield event
        raise ServerShuttingDown(MESSAGE)


@contextmanager
def on_shutdown_signals(drain: Drain, grace_seconds: float) -> Iterator[None]:
    """While the app runs, SIGTERM and SIGINT also begin `drain`; the
    server's own handlers still run, first to last as before.

    Only a server's handler is chained (uvicorn's, in each of its workers),
    so the signal keeps its meaning; off the main thread (a test client's
    lifespan) the signals are not ours to hear.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    chained = {}
    for number in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(number)
        if not callable(previous):
            continue  # the default action, or ignored: leave it so

        def handler(signum: int, frame: FrameType | None, previous=previous) -> None:
            loop.call_soon_threadsafe(drain.begin, grace_seconds)
            previous(signum, frame)

        signal.signal(number, handler)
        chained[number] = (handler, previous)
    try:
        yield
    finally:
        for number, (handler, previous) in chained.items():
            if signal.getsignal(number) is handler:
                signal.signal(number, previous)
