"""Writes kept off the request path: a task that flushes what was queued to
the database every few seconds (API keys' last use, the usage ledger)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from gptmini_graphql.errors import DatabaseUnavailable


class FlushLoop:
    """Calls `flush` every `seconds`. While the database is down, `unavailable`
    says so and what was queued waits for the next round. The owner flushes
    once more after `stop`: it knows what a failure then loses."""

    def __init__(
        self,
        flush: Callable[[], Awaitable[None]],
        seconds: float,
        unavailable: Callable[[], None],
    ) -> None:
        self._flush = flush
        self._seconds = seconds
        self._unavailable = unavailable
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._seconds)
            try:
                await self._flush()
            except DatabaseUnavailable:
                self._unavailable()
