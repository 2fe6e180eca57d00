"""Answers worked up one per turn of the event loop while it has time to
spare, so the requests that arrive meanwhile are not held up behind them.

Calls sent together come back together. asyncio then wakes every waiting
request in one pass of its loop and works all of them up before it reads a
socket again; the requests their clients send next queue behind that whole
batch, reach the upstream together, come back together, and the cycle
repeats: each round trip costs the upstream's time plus the whole batch's
CPU, while the process sits idle in between (issue 17: 64 clients and a
200 ms upstream got 0.86 of the throughput of calling it directly).

`ReplyTurns.take` breaks that cycle. While the loop's thread was mostly
idle over the last `window`, one answer goes on per pass of the loop and
the rest wait, in order, for the next passes: between two passes the loop
polls its sockets, so a request that arrived meanwhile takes its next step
(rate limit, reservation, its own upstream call) without waiting for the
whole batch. The calls then spread out in time and the batch does not form
again. While the loop is busy, answers always go on at once: holding them
would not make a busy loop any faster, and would cost it the batching that
keeps its CPU per request low.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque


class ReplyTurns:
    """Turns for answered calls, on the event loop that runs them."""

    def __init__(self, *, window: float = 0.1, busy_above: float = 0.5) -> None:
        self.window = window  # seconds over which the loop's load is read
        self.busy_above = busy_above  # above this share of a CPU: no turns
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: deque[asyncio.Future[None]] = deque()
        self._pacing = True  # the loop was mostly idle in the last window
        self._given = False  # an answer went on in this pass of the loop
        self._ticking = False  # `_next_pass` is due in the next pass
        self._since = float("-inf")  # loop time the window started
        self._cpu = 0.0  # the loop thread's CPU time then

    async def take(self) -> None:
        """Returns when this answer may be worked up."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests): nothing carries over
            self._loop, self._held, self._given, self._ticking = (
                loop,
                deque(),
                False,
                False,
            )
            self._since = float("-inf")
        if not self._ticking:
            self._read_load(loop)
            if not self._pacing:
                return  # a busy loop: at once, and no passes to count
            self._ticking = True
            loop.call_soon(self._next_pass)
        if not self._pacing or not (self._given or self._held):
            self._given = True
            return
        turn = loop.create_future()
        self._held.append(turn)
        await turn

    def _read_load(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        if now - self._since >= self.window:
            # The thread's own CPU time: a wait for a core reads as idle.
            cpu = time.thread_time()
            self._pacing = cpu - self._cpu < self.busy_above * (now - self._since)
            self._since, self._cpu = now, cpu

    def _next_pass(self) -> None:
        """Runs in each pass after one with answers: the next held answer's
        turn (every held answer's, once the loop is busy)."""
        loop = self._loop
        assert loop is not None
        self._read_load(loop)
        self._given = False
        turns = 1 if self._pacing else len(self._held)
        while self._held and turns:
            turn = self._held.popleft()
            if not turn.done():  # a cancelled waiter has left
                turn.set_result(None)
                self._given = True  # its answer goes on in the next pass
                turns -= 1
        if self._held or self._given:
            loop.call_soon(self._next_pass)
        else:
            self._ticking = False
