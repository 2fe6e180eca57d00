"""A circuit breaker: stop calling what keeps failing, and try it again later.

Guards the LLM upstreams (llm/calls.py), and the Redis behind the response
cache and the rate limits, so a dependency that is down costs one failure
per reset period rather than one timeout per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class CircuitBreaker:
    """Closed: calls go through. After `threshold` outages in a row it opens and
    calls fail at once; `reset_seconds` later one call may probe the upstream,
    and its outcome closes or reopens the circuit. `clock` measures that
    period (seconds, monotonic; tests move one by hand)."""

    def __init__(
        self,
        threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.probing = False

    def allow(self) -> bool:
        if self.opened_at is None:
            return True
        if self._reset_due() and not self.probing:
            self.probing = True  # this call is the probe; others wait for it
            return True
        return False

    def retry_after(self) -> float:
        if self.opened_at is None:
            return 0.0
        return max(self.opened_at + self.reset_seconds - self.clock(), 1.0)

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.probing = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        self.probing = False
        if self.opened_at is not None or self.failures >= self.threshold:
            self.opened_at = self.clock()

    def released(self) -> None:
        """A call that proved nothing either way (the caller left, a 4xx)."""
        self.probing = False

    def _reset_due(self) -> bool:
        assert self.opened_at is not None
        return self.clock() - self.opened_at >= self.reset_seconds


class NeverOpen(CircuitBreaker):
    """For an upstream that fails fast by itself while down (a local process
    being restarted refuses connections at once): nothing to guard against."""

    def __init__(self) -> None:
        super().__init__(threshold=1, reset_seconds=0)

    def allow(self) -> bool:
        return True

    def failed(self) -> None:
        pass
