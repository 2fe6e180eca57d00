"""Budgets enforced across replicas: a call's worst case reserved against
every budget that binds its caller, or refused (BUDGET_EXCEEDED, or
TOKEN_RATE_LIMITED for a per-minute token limit, saying which budget and what
is left); then settled at its real cost, and a long stream's reservation kept
alive.

`Spend` is what the app shares: the reservation store, the ledger, the
clock, and the outage policy: while the store's Redis is unreachable (the
app's one client says so: shared_redis.py), a caller with budgets is
refused with BUDGET_UNAVAILABLE (nothing is spent unseen); a caller without
any goes on. A counter the store has not seen yet is seeded from the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Hashable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypedDict, TypeVar

from gptmini_graphql.db.database import Database
from gptmini_graphql.errors import (
    BudgetExceeded,
    BudgetUnavailable,
    TokenRateLimited,
)
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.settings import Settings
from gptmini_graphql.shared_redis import RedisUnavailable
from gptmini_graphql.spend import budgets as budgets_
from gptmini_graphql.spend import usage
from gptmini_graphql.spend.budgets import Budget
from gptmini_graphql.spend.ledger import Ledger
from gptmini_graphql.spend.reservations import ReservationStore

logger = logging.getLogger("gptmini_graphql.spend")
MAX_KEPT_CALLERS = 10_000
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: uuid.UUID
    api_key_id: uuid.UUID | None
    user_budgets: Mapping[str, float | int]
    key_budgets: Mapping[str, float | int] | None


@dataclass(slots=True)
class Hold:
    """A granted reservation (budgets empty: the caller has none)."""

    id: str
    budgets: list[Budget]
    usd_nano: int
    tokens: int
    prompt_tokens: int  # of `tokens`, the prompt's bound
    # Clock time of the reservation: the ledger dates the call by it, so its
    # row falls in the period whose counters it was charged to (a counter
    # seeded from the ledger then never counts it a second time).
    at: float
    started: float  # perf_counter, for the ledger's latency
    extended: float = 0.0  # clock time of the last expiry push
    priced: bool = True  # False: no upstream's model has a price
    # Per budget, what it had used when this was granted, this one included.
    used: list[int] = field(default_factory=list)
    tag: str = ""  # its owner's in the store (the user id), made once


@dataclass(slots=True)
class Left:
    """What the operation's budgets have left, for the result's extensions:
    as of the call's reservation, then with its worst case replaced by its
    real cost (a settle is not waited for, so the store is not asked again)."""

    # Each budget's figure, by label: written at reserve and again at settle,
    # and made into what clients read only when read (`budgets`).
    used: dict[str, tuple[Budget, int]] = field(default_factory=dict)
    # What `budgets` made, until the next `note`: a stream reads it for
    # every event, and the figures change only at reserve and settle.
    _shown: dict[str, dict[str, Any]] | None = None

    def note(self, budget: Budget, used: int | None) -> None:
        if used is not None:
            self.used[budget.label] = (budget, used)
            self._shown = None

    @property
    def budgets(self) -> dict[str, dict[str, Any]]:
        if self._shown is None:
            self._shown = {
                label: {
                    "limit": budget.shown(budget.limit),
                    "remaining": budget.shown(max(budget.limit - used, 0)),
                    "resetsAt": budget.resets_at,
                }
                for label, (budget, used) in self.used.items()
            }
        return self._shown


class _Refused(TypedDict):
    """What a refusal says of the budget, in its error's extensions."""

    budget: str
    limit: float
    remaining: float
    requested: float
    resets_at: str


class Spend:
    """The app's budgets, enforced: see the module's docstring."""

    def __init__(
        self,
        settings: Settings,
        store: ReservationStore,
        ledger: Ledger,
        db: Database,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.defaults = budgets_.defaults(settings)
        self.store = store
        self.ledger = ledger
        self.db = db
        self.clock = clock
        # A reservation outlives any call it covers: a call is bounded by the
        # timeout; a stream pushes its expiry on while it runs.
        self.hold_seconds = 2 * settings.llm_timeout_seconds + 10
        # Counters being seeded, by name: callers that find one missing
        # together (every request at a new minute) share one ledger query.
        self._seeding: dict[str, asyncio.Task[None]] = {}
        # Per caller and limits: (valid from, valid until, their budgets).
        self._budgets: dict[Hashable, tuple[float, float, list[Budget]]] = {}

    async def aclose(self) -> None:
        await self.store.drain()  # the last settles; its Redis is the app's to close
        await self.ledger.aclose()

    def budgets(self, caller: Caller, now: float) -> list[Budget]:
        """The caller's budgets now: made once per caller, limits and periods
        (their names, counters and dates were a third of a call's budget
        work), then kept until the first of their periods ends."""
        key = (
            caller.user_id,
            caller.api_key_id,
            tuple(caller.user_budgets.items()),
            tuple((caller.key_budgets or {}).items()),
        )
        kept = self._budgets.get(key)
        if kept is not None and kept[0] <= now < kept[1]:
            return kept[2]
        limits = budgets_.effective(caller.user_budgets, self.defaults)
        found = budgets_.budgets_of(
            caller.user_id, limits, caller.api_key_id, caller.key_budgets, now
        )
        if len(self._budgets) >= MAX_KEPT_CALLERS:
            self._budgets.clear()  # callers come back: made again on their next call
        start = max((b.start.timestamp() for b in found), default=now)
        end = min((b.end.timestamp() for b in found), default=now + 60)
        self._budgets[key] = (start, end, found)
        return found

    async def reserve(
        self, caller: Caller, usd_nano: int, tokens: int, prompt: int, left: Left
    ) -> Hold:
        now = self.clock()
        budgets = self.budgets(caller, now)
        hold = Hold(
            # 128 random bits, as a uuid4's, for a quarter of its CPU.
            os.urandom(16).hex(),
            budgets,
            usd_nano,
            tokens,
            prompt,
            now,
            time.perf_counter(),
        )
        if not budgets:
            return hold
        holds = [(b, b.amount(usd_nano, tokens)) for b in budgets]
        tag = hold.tag = str(caller.user_id)
        for _ in range(3):  # seeding races another replica at most briefly
            verdict = await self._guarded(
                self.store.reserve(tag, hold.id, holds, now, now + self.hold_seconds)
            )
            if verdict.granted:
                hold.extended = now
                hold.used = verdict.used
                for budget, used in zip(budgets, verdict.used, strict=True):
                    left.note(budget, used)
                return hold
            if verdict.refused is not None:
                raise self._refusal(holds[verdict.refused], verdict.used[0], now)
            for index in verdict.missing:
                await self._seed(tag, budgets[index], now)
        raise BudgetUnavailable("Budgets cannot be checked right now.", retry_after=1)

    def settle(
        self, caller: Caller, hold: Hold, usd_nano: int, tokens: int, left: Left
    ) -> None:
        """Charge what the call cost and release the rest of its reservation:
        asked of the store, not waited for (reservations.py), so a caller
        cancelled meanwhile settles all the same."""
        if not hold.budgets:
            return
        charges = [(b, b.amount(usd_nano, tokens)) for b in hold.budgets]
        self.store.settle(hold.tag, hold.id, charges, self.clock())
        for (budget, charge), used in zip(charges, hold.used, strict=True):
            left.note(budget, used - budget.amount(hold.usd_nano, hold.tokens) + charge)

    def keep_due(self, hold: Hold) -> bool:
        """Whether a stream's reservation is due to be kept (`keep`): every
        third of its time. Asked for every chunk, so not a coroutine."""
        return bool(hold.budgets) and (
            self.clock() - hold.extended >= self.hold_seconds / 3
        )

    async def keep(self, caller: Caller, hold: Hold) -> None:
        """Push a long stream's reservation expiry on (every third of it)."""
        now = self.clock()
        if not hold.budgets or now - hold.extended < self.hold_seconds / 3:
            return
        hold.extended = now
        try:
            await self._guarded(
                self.store.extend(
                    hold.tag,
                    hold.id,
                    hold.budgets,
                    now,
                    now + self.hold_seconds,
                )
            )
        except BudgetUnavailable:
            logger.warning("could not extend a stream's reservation")

    async def _seed(self, tag: str, budget: Budget, now: float) -> None:
        """Seed `budget`'s missing counter from the ledger, once in this
        process however many callers find it missing at the same time."""
        seeding = self._seeding.get(budget.counter)
        if seeding is None:
            seeding = asyncio.create_task(self._seed_from_ledger(tag, budget, now))
            self._seeding[budget.counter] = seeding
            seeding.add_done_callback(partial(self._seeded, budget.counter))
        # Shielded: one caller leaving must not cancel the others' seeding.
        await asyncio.shield(seeding)

    async def _seed_from_ledger(self, tag: str, budget: Budget, now: float) -> None:
        spent = await self.spent_in_ledger(budget)
        await self._guarded(self.store.seed(tag, budget, spent, now))

    def _seeded(self, counter: str, seeding: asyncio.Task[None]) -> None:
        del self._seeding[counter]
        if not seeding.cancelled():
            seeding.exception()  # retrieved: its waiting callers have it raised

    async def spent_in_ledger(self, budget: Budget) -> int:
        """What the ledger says `budget`'s owner spent in its period (this
        process's queued rows written first)."""
        await self.ledger.flush()
        return await usage.spent(self.db, budget)

    async def _guarded(self, step: Awaitable[T]) -> T:
        """`step`'s result, or BUDGET_UNAVAILABLE while the store's Redis is
        unreachable (SharedRedis logs the outage and says when to retry)."""
        try:
            return await step
        except RedisUnavailable as error:
            self.metrics.budget_store_errors.inc()
            raise BudgetUnavailable(
                "Budgets cannot be checked right now; retry shortly.",
                retry_after=error.retry_after,
            ) from error

    def _refusal(
        self, hold: tuple[Budget, int], used: int, now: float
    ) -> TokenRateLimited | BudgetExceeded:
        budget, amount = hold
        remaining = max(budget.limit - used, 0)
        details: _Refused = {
            "budget": budget.label,
            "limit": budget.shown(budget.limit),
            "remaining": budget.shown(remaining),
            "requested": budget.shown(amount),
            "resets_at": budget.resets_at,
        }
        what = "USD" if budget.unit == "usd" else "tokens"
        self.metrics.budget_refusals.labels(budget.label).inc()
        if budget.period == "minute":
            return TokenRateLimited(
                f"This call may use up to {budget.shown(amount)} tokens; "
                f"{budget.shown(remaining)} of {budget.shown(budget.limit)} are "
                "left this minute.",
                retry_after=budget.end.timestamp() - now,
                **details,
            )
        return BudgetExceeded(
            f"This call may cost up to {budget.shown(amount)} {what}; "
            f"{budget.shown(remaining)} of the {budget.label} budget of "
            f"{budget.shown(budget.limit)} are left.",
            **details,
        )
