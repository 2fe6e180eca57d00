"""A call shared by identical requests in flight (the response cache's single
flight) is reserved against its first caller's budgets: when they refuse
it, the others are not refused with them (nor told of another's budget)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import pytest

from tests.auth.accounts import add_user
from tests.conftest import API, error_codes, postgres_url
from tests.spend.helpers import SET_BUDGETS
from tests.test_subscriptions import eventually

pytestmark = pytest.mark.skipif(
    postgres_url() is None, reason="DATABASE_URL names no PostgreSQL"
)

QUERY = '{ summarize(text: "One text for everyone.") { text cached } }'


class LedgerLock:
    """The ledger table locked from another connection: whoever must read it
    (to seed a budget's counter) waits until `release`."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url.replace("postgresql+asyncpg://", "postgresql://")
        self._locked = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._hold(),))

    async def _hold(self) -> None:
        connection = await asyncpg.connect(self._url)
        try:
            async with connection.transaction():
                await connection.execute("LOCK TABLE ledger IN ACCESS EXCLUSIVE MODE")
                self._locked.set()
                await asyncio.to_thread(self._release.wait, 30)
        finally:
            await connection.close()

    def __enter__(self) -> LedgerLock:
        self._thread.start()
        assert self._locked.wait(30), "could not lock the ledger"
        return self

    def release(self) -> None:
        self._release.set()

    def __exit__(self, *_: object) -> None:
        self.release()
        self._thread.join(30)


def _count(api: API, result: str) -> float:
    text = api.client.get("/metrics").text
    prefix = f'gptmini_cache_requests_total{{result="{result}"}} '
    (line,) = [x for x in text.splitlines() if x.startswith(prefix)]
    return float(line.split()[1])


def test_a_refusal_by_the_first_callers_budget_is_not_shared(
    make_api: Callable[..., API], postgres_databases
) -> None:
    database = postgres_databases()
    api = make_api(database_url=database, cache_ttl_seconds=60, cache_scope="shared")
    admin = api.login()
    bo = add_user(api, admin, "bo")
    budgets = {"username": "test_user", "budgets": {"usdPerDay": 0}}
    assert "errors" not in api.post(SET_BUDGETS, budgets, token=admin)
    misses, shared = _count(api, "miss"), _count(api, "coalesced")

    with LedgerLock(database) as lock, ThreadPoolExecutor(2) as pool:
        # The admin's call waits to seed their budget from the locked ledger...
        first = pool.submit(api.post, QUERY, token=admin)
        eventually(lambda: _count(api, "miss") == misses + 1, "no call in flight")
        # ...while bo's identical request joins it.
        second = pool.submit(api.post, QUERY, token=bo)
        eventually(lambda: _count(api, "coalesced") == shared + 1, "not shared")
        lock.release()
        refused, answered = first.result(30), second.result(30)

    assert error_codes(refused) == ["BUDGET_EXCEEDED"]
    assert "errors" not in answered, answered  # bo has no budget: his own call
    assert answered["data"]["summarize"]["cached"] is False
