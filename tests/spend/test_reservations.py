"""The Redis reservation store's scripts against a real Redis, where the
GraphQL surface cannot reach: thousands of reservations of one budget
left to expire by a replica that died."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from gptmini_graphql.metrics import Metrics
from gptmini_graphql.shared_redis import SharedRedis
from gptmini_graphql.spend.budgets import budgets_of
from gptmini_graphql.spend.redis_reservations import RedisReservations
from tests.conftest import redis_url
from tests.redis_server import RedisServer

pytestmark = pytest.mark.skipif(redis_url() is None, reason="REDIS_URL is not set")


def test_thousands_of_expired_reservations_are_dropped_in_one_reserve() -> None:
    async def scenario() -> None:
        shared = SharedRedis(redis_url(), Metrics())
        client = shared.client
        store = RedisReservations(shared)
        try:
            user = uuid.uuid4()
            now = 1_800_000_000.0
            (budget,) = budgets_of(user, {"tokens_per_day": 10**9}, None, None, now)
            tag = str(user)
            await store.seed(tag, budget, 0, now)
            # More than Lua's unpack() takes at once, as a replica that died
            # with them in flight leaves them (written directly: 9000 scripts
            # one by one are half a minute on a busy machine).
            _, reserved, amounts = store._keys(tag, budget)
            ids = [f"r{i}" for i in range(9000)]
            async with client.pipeline(transaction=False) as pipe:
                pipe.zadd(reserved, dict.fromkeys(ids, now + 10))
                pipe.hset(amounts, mapping=dict.fromkeys(ids, 1))
                await pipe.execute()
            verdict = await store.reserve(tag, "live", [(budget, 1)], now, now + 10)
            assert verdict.used == [9001]
            later = now + 11
            verdict = await store.reserve(tag, "next", [(budget, 5)], later, later + 10)
            assert verdict.granted
            assert verdict.used == [5]  # the expired ones hold nothing
        finally:
            await shared.aclose()

    asyncio.run(scenario())


def test_settles_are_done_in_order_and_drained_and_a_cancelled_grant_released() -> None:
    """A settle is not waited for, yet the same process's next reserve sees
    it; `drain` waits for the last ones; a reserve whose caller left after
    asking is released, not held until it expires."""

    async def scenario() -> None:
        shared = SharedRedis(redis_url(), Metrics())
        store = RedisReservations(shared)
        try:
            user = uuid.uuid4()
            now = 1_800_000_000.0
            (budget,) = budgets_of(user, {"tokens_per_day": 100}, None, None, now)
            tag = str(user)
            await store.seed(tag, budget, 0, now)
            first = await store.reserve(tag, "a", [(budget, 60)], now, now + 10)
            assert first.used == [60]
            store.settle(tag, "a", [(budget, 30)], now)  # not awaited
            second = await store.reserve(tag, "b", [(budget, 60)], now, now + 10)
            assert second.used == [90]  # 30 spent + this one: "a" was settled first
            store.settle(tag, "b", [(budget, 0)], now)

            left = asyncio.ensure_future(
                store.reserve(tag, "c", [(budget, 70)], now, now + 10)
            )
            await asyncio.sleep(0)  # asked, not answered yet
            left.cancel()
            await store.drain()
            third = await store.reserve(tag, "d", [(budget, 70)], now, now + 10)
            assert third.granted  # 30 spent + 70: "c" holds nothing
            assert third.used == [100]
        finally:
            await store.drain()
            await shared.aclose()

    asyncio.run(scenario())


def test_steps_go_on_after_redis_lost_the_script(redis_server: RedisServer) -> None:
    """A Redis restarted (or SCRIPT FLUSHed) has lost the steps' script: it
    is loaded again and the waiting steps run, each once."""

    async def scenario() -> None:
        shared = SharedRedis(redis_server.url, Metrics())
        store = RedisReservations(shared)
        try:
            user = uuid.uuid4()
            now = 1_800_000_000.0
            (budget,) = budgets_of(user, {"tokens_per_day": 100}, None, None, now)
            tag = str(user)
            await store.seed(tag, budget, 0, now)
            await store.reserve(tag, "a", [(budget, 60)], now, now + 10)
            await shared.client.script_flush()
            store.settle(tag, "a", [(budget, 30)], now)
            second = await store.reserve(tag, "b", [(budget, 60)], now, now + 10)
            assert second.used == [90]  # "a" settled once, then "b" held
        finally:
            await store.drain()
            await shared.aclose()

    asyncio.run(scenario())
