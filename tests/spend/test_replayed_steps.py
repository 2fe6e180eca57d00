"""Every budget step done twice has the effect of doing it once.

redis-py sends a command again when its connection is lost, and the first
may have run with only its reply lost. Each step is replayed here with the
same reservation id, in the Redis store and in its in-memory twin (the same
rules); then a proxy between us and Redis drops a connection once Redis
has run a step and answered, so that redis-py's own retry replays it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gptmini_graphql.metrics import Metrics
from gptmini_graphql.shared_redis import SharedRedis
from gptmini_graphql.spend.budgets import Budget, budgets_of
from gptmini_graphql.spend.redis_reservations import RedisReservations
from gptmini_graphql.spend.reservations import (
    SETTLED_SECONDS,
    MemoryReservations,
    ReservationStore,
)
from tests.conftest import redis_url
from tests.spend.dropping_proxy import DroppingProxy

NOW = 1_800_000_000.0
LATER = NOW + 10  # the reservations below expire then
needs_redis = pytest.mark.skipif(redis_url() is None, reason="REDIS_URL is not set")
STORES = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=needs_redis),
]


@asynccontextmanager
async def _store(kind: str, url: str | None = None) -> AsyncIterator[ReservationStore]:
    if kind == "memory":
        yield MemoryReservations()
        return
    shared = SharedRedis(url or str(redis_url()), Metrics())
    try:
        yield RedisReservations(shared)
    finally:
        await shared.aclose()


async def _budget(store: ReservationStore, limit: int = 100) -> tuple[str, Budget]:
    user = uuid.uuid4()
    (budget,) = budgets_of(user, {"tokens_per_day": limit}, None, None, NOW)
    await store.seed(str(user), budget, 0, NOW)
    return str(user), budget


async def _used(store: ReservationStore, tag: str, budget: Budget, at: float) -> int:
    """Spent plus live reservations at `at` (asked with a zero reservation)."""
    await store.drain()
    verdict = await store.reserve(tag, uuid.uuid4().hex, [(budget, 0)], at, at)
    assert verdict.granted
    return verdict.used[0]


def _run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


@pytest.mark.parametrize("kind", STORES)
def test_a_reserve_sent_twice_holds_once_and_grants_alike(kind: str) -> None:
    async def scenario() -> None:
        async with _store(kind) as store:
            tag, budget = await _budget(store)
            first = await store.reserve(tag, "a", [(budget, 60)], NOW, LATER)
            again = await store.reserve(tag, "a", [(budget, 60)], NOW, LATER)
            assert first.granted and again.granted  # 120 would be over 100
            assert first.used == again.used == [60]
            assert await _used(store, tag, budget, NOW) == 60

    _run(scenario)


@pytest.mark.parametrize("kind", STORES)
def test_a_settle_or_release_sent_twice_counts_once(kind: str) -> None:
    async def scenario() -> None:
        async with _store(kind) as store:
            tag, budget = await _budget(store)
            await store.reserve(tag, "a", [(budget, 60)], NOW, LATER)
            await store.reserve(tag, "b", [(budget, 30)], NOW, LATER)
            for _ in range(2):
                store.settle(tag, "a", [(budget, 25)], NOW)
                store.settle(tag, "b", [(budget, 0)], NOW)  # a release
            assert await _used(store, tag, budget, NOW) == 25
            # Still known as settled just before it is forgotten.
            store.settle(tag, "a", [(budget, 25)], NOW + SETTLED_SECONDS - 1)
            assert await _used(store, tag, budget, NOW) == 25

    _run(scenario)


@pytest.mark.parametrize("kind", STORES)
def test_a_settle_after_its_reservation_expired_still_charges_once(kind: str) -> None:
    async def scenario() -> None:
        async with _store(kind) as store:
            tag, budget = await _budget(store)
            await store.reserve(tag, "a", [(budget, 60)], NOW, LATER)
            assert await _used(store, tag, budget, LATER) == 0  # lapsed, dropped
            for _ in range(2):
                store.settle(tag, "a", [(budget, 40)], LATER)
            assert await _used(store, tag, budget, LATER) == 40

    _run(scenario)


@pytest.mark.parametrize("kind", STORES)
def test_an_expiry_push_never_brings_back_a_lapsed_or_settled_reservation(
    kind: str,
) -> None:
    async def scenario() -> None:
        async with _store(kind) as store:
            tag, budget = await _budget(store)
            await store.reserve(tag, "live", [(budget, 10)], NOW, LATER)
            await store.reserve(tag, "lapsed", [(budget, 20)], NOW, NOW + 5)
            await store.reserve(tag, "settled", [(budget, 30)], NOW, LATER)
            store.settle(tag, "settled", [(budget, 0)], NOW)
            at = NOW + 6  # "lapsed" expired, not yet dropped by any reserve
            for _ in range(2):
                for hold in ("live", "lapsed", "settled"):
                    await store.extend(tag, hold, [budget], at, at + 100)
            assert await _used(store, tag, budget, LATER + 1) == 10  # "live" only

    _run(scenario)


@needs_redis
@pytest.mark.parametrize("step", ["settle", "reserve"])
def test_redis_py_replays_a_step_whose_reply_was_lost_and_it_counts_once(
    step: str,
) -> None:
    """The proxy lets Redis run the step, withholds its reply and closes the
    connection: redis-py reconnects and sends the same step again."""

    async def scenario() -> None:
        async with (
            DroppingProxy(str(redis_url())) as proxy,
            _store("redis", proxy.url) as store,
        ):
            tag, budget = await _budget(store)
            await store.reserve(tag, "a", [(budget, 60)], NOW, LATER)
            proxy.drop_next_reply()
            if step == "settle":
                store.settle(tag, "a", [(budget, 25)], NOW)
                expected = 25
            else:
                verdict = await store.reserve(tag, "b", [(budget, 30)], NOW, LATER)
                assert verdict.granted
                assert verdict.used == [90]  # 60 + 30, "b" counted once
                expected = 90
            used = await _used(store, tag, budget, NOW)
            assert proxy.dropped == 1  # the first reply was lost...
            assert proxy.connections == 2  # ... and the step sent again
            assert used == expected

    _run(scenario)
