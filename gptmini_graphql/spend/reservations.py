"""Reservations against budgets, in one atomic step: in memory (exact for
one process, here), or in Redis with Lua scripts (exact across every process
that shares it: redis_reservations.py).

For each budget and period there is a spent counter and a set of live
reservations, each with an expiry time. `reserve` drops expired
reservations, then grants only if, for every budget at once, spent + live
reservations + this request's amount stays within the limit; `settle`
removes the reservation and adds what the call really cost; it is not
waited for, only done before any later step of the same process. A process
that dies holding a reservation leaves it to expire by itself.

Every step can be done twice with the same effect as once, by its
reservation's id: redis-py sends a command again after a lost connection,
and the first may have run with only its reply lost. A reserve whose id is
already held grants as before and adds nothing; a settle counts once (its id
is remembered SETTLED_SECONDS), even when its reservation had expired (the
call still cost what it cost); `extend` pushes only a reservation still live,
so neither a replay nor a late push brings back one that lapsed or settled.

A counter that does not exist yet (a new period, a restarted Redis, a new
process in memory) is reported as missing: the caller seeds it from the
ledger (`seed`, set only if still missing) and asks again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gptmini_graphql.spend.budgets import Budget

# Counters outlive their period by this much (then Redis forgets them).
KEEP_SECONDS = 3600
# A settled reservation's id is remembered this long, so a settle sent again
# is known (redis-py sends it again at once, after reconnecting; clocks of
# replicas agree far better). One id per call: short keeps them few.
SETTLED_SECONDS = 30


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `reserve` found. Granted: `used` is each budget's spent + live
    reservations, this one included. Refused: `refused` is the index of the
    first budget without room, `used[0]` what it had used. Missing: the
    indexes of budgets whose counter must be seeded first."""

    granted: bool
    used: list[int] = field(default_factory=list)
    refused: int | None = None
    missing: list[int] = field(default_factory=list)


class ReservationStore(Protocol):
    """A step that cannot reach the store raises RedisUnavailable (a settle
    that cannot is counted and logged: its reservation expires)."""

    async def reserve(
        self,
        tag: str,
        reservation: str,
        holds: Sequence[tuple[Budget, int]],
        now: float,
        expires: float,
    ) -> Verdict: ...

    def settle(
        self,
        tag: str,
        reservation: str,
        charges: Sequence[tuple[Budget, int]],
        now: float,
    ) -> None: ...

    async def extend(
        self,
        tag: str,
        reservation: str,
        budgets: Sequence[Budget],
        now: float,
        expires: float,
    ) -> None: ...

    async def seed(self, tag: str, budget: Budget, spent: int, now: float) -> None: ...

    async def drain(self) -> None:
        """Wait until every settle asked for has been done (shutdown)."""


class _Counter:
    __slots__ = ("end", "reservations", "spent")

    def __init__(self, spent: int, end: float) -> None:
        self.spent = spent
        self.end = end
        self.reservations: dict[str, tuple[int, float]] = {}  # id -> (amount, expiry)

    def used(self, now: float) -> int:
        stale = [r for r, (_, expiry) in self.reservations.items() if expiry <= now]
        for reservation in stale:
            del self.reservations[reservation]
        return self.spent + sum(amount for amount, _ in self.reservations.values())


class MemoryReservations:
    """The same semantics in this process's memory (no await inside a step,
    so each step is atomic on the event loop)."""

    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}
        self._settled: dict[str, float] = {}  # id -> when it is forgotten
        self._next_forget = 0.0
        self._next_sweep = 0.0

    async def reserve(
        self,
        tag: str,
        reservation: str,
        holds: Sequence[tuple[Budget, int]],
        now: float,
        expires: float,
    ) -> Verdict:
        self._sweep(now)
        counters = [self._counters.get(b.counter) for b, _ in holds]
        missing = [i for i, c in enumerate(counters) if c is None]
        if missing:
            return Verdict(False, missing=missing)
        present = [c for c in counters if c is not None]  # all of them, now
        used = [c.used(now) for c in present]
        if reservation in present[0].reservations:
            return Verdict(True, used=used)  # granted before: nothing added
        for index, ((budget, amount), before) in enumerate(
            zip(holds, used, strict=True)
        ):
            if before + amount > budget.limit:
                return Verdict(False, used=[before], refused=index)
        for (_, amount), counter in zip(holds, present, strict=True):
            counter.reservations[reservation] = (amount, expires)
        return Verdict(
            True, used=[u + a for u, (_, a) in zip(used, holds, strict=True)]
        )

    def settle(
        self,
        tag: str,
        reservation: str,
        charges: Sequence[tuple[Budget, int]],
        now: float,
    ) -> None:
        if self._settled.get(reservation, now) > now:
            return  # settled already
        if now >= self._next_forget:  # at most SETTLED_SECONDS / 3 past their time
            self._next_forget = now + SETTLED_SECONDS / 3
            self._settled = {r: t for r, t in self._settled.items() if t > now}
        self._settled[reservation] = now + SETTLED_SECONDS
        for budget, charge in charges:
            counter = self._counters.get(budget.counter)
            if counter is None:
                continue  # lost meanwhile: seeded again from the ledger
            counter.reservations.pop(reservation, None)
            counter.spent += charge

    async def extend(
        self,
        tag: str,
        reservation: str,
        budgets: Sequence[Budget],
        now: float,
        expires: float,
    ) -> None:
        for budget in budgets:
            counter = self._counters.get(budget.counter)
            held = counter.reservations.get(reservation) if counter else None
            if counter is not None and held is not None and held[1] > now:
                counter.reservations[reservation] = (held[0], expires)

    async def seed(self, tag: str, budget: Budget, spent: int, now: float) -> None:
        self._counters.setdefault(
            budget.counter, _Counter(spent, budget.end.timestamp())
        )

    async def drain(self) -> None:
        pass  # every settle is done when asked

    def _sweep(self, now: float) -> None:
        """Forget counters of periods long over (once a minute at most)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        over = [k for k, c in self._counters.items() if c.end + KEEP_SECONDS < now]
        for name in over:
            del self._counters[name]
