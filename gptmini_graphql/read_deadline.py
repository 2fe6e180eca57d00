"""A deadline for each read of a stream, counting only the time its task
waits on the read (llm/streaming.py bounds each wait for the upstream's next
chunk with one).

A reader of the stream that steps it by hand (http/event_stream.py's
`_send_frames`) begins the next read, and sends what it has before its task
waits on that read: that send is not the read's time. A client slow to read
(its socket's buffer full) would otherwise time out a healthy upstream, and
count against its circuit. So such a reader marks its time `away()` from the
reads its task has begun, and their deadlines stop while it is away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

# The deadlines alive in each task (a list: a task may hold several streams).
_DEADLINES: dict[asyncio.Task[Any], list[ReadDeadline]] = {}


class ReadDeadline:
    """`wait` seconds for each read, as `asyncio.timeout(wait)` around each
    read gave them, without its timer made and cancelled for every read
    (a twentieth of a stream's CPU): a read marks when it began (`since`;
    None between reads, while the caller has the chunk), and one timer,
    moved on lazily, cancels the reading task once a read has waited `wait`.
    Time away from the read (`away`) is not the read's: it moves `since` on.
    """

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self.loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None  # the stream is read in the task that began it
        self.task = task
        self.since: float | None = None
        self._left: float | None = None  # when the task went away from the read
        self._cancelled = False
        self._timer = self.loop.call_later(wait, self._check)
        _DEADLINES.setdefault(task, []).append(self)

    def _check(self) -> None:
        now = self.loop.time()
        if self.since is None or self._left is not None:
            # No read under way, or its task is away from it: the read
            # cannot end its `wait` before `wait` from now.
            self._timer = self.loop.call_at(now + self.wait, self._check)
        elif now >= self.since + self.wait:
            self._cancelled = True
            self.task.cancel()
        else:
            self._timer = self.loop.call_at(self.since + self.wait, self._check)

    def _leave(self) -> None:
        if self.since is not None:
            self._left = self.loop.time()

    def _come_back(self) -> None:
        if self.since is None or self._left is None:
            return
        self.since += self.loop.time() - self._left
        self._left = None
        end = self.since + self.wait
        if self._timer.when() > end:  # moved on while away, past this end
            self._timer.cancel()
            self._timer = self.loop.call_at(end, self._check)

    def expired(self) -> bool:
        """Whether a cancellation is this deadline's alone (as asyncio.timeout
        tells its own from anyone else's)."""
        if not self._cancelled:
            return False
        self._cancelled = False
        return self.task.uncancel() == 0

    def stop(self) -> None:
        self._timer.cancel()
        deadlines = _DEADLINES[self.task]
        deadlines.remove(self)
        if not deadlines:
            del _DEADLINES[self.task]


class away:  # lower case: it reads as a function, `with away():`
    """While in this block, the current task is not waiting on the reads it
    has begun: their deadlines stop, and go on from where they were."""

    __slots__ = ("_deadlines",)

    def __enter__(self) -> None:
        task = asyncio.current_task()
        self._deadlines: Sequence[ReadDeadline] = (
            _DEADLINES.get(task, ()) if task is not None else ()
        )
        for deadline in self._deadlines:
            deadline._leave()

    def __exit__(self, *_: object) -> None:
        for deadline in self._deadlines:
            deadline._come_back()
