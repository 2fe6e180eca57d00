"""The concurrency proof: two server processes sharing Redis and PostgreSQL,
a budget that fits exactly k worst-case calls, and 20·k concurrent calls
split across them: k admitted, the rest refused, one ledger row per admitted
call and the ledger's total never above the budget. And a reservation held
by a process that was killed expires by itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.conftest import Clock, error_codes, postgres_url, redis_url
from tests.spend.helpers import SET_BUDGETS
from tests.spend.replicas import Replica, Upstream

pytestmark = [
    pytest.mark.skipif(redis_url() is None, reason="REDIS_URL is not set"),
    pytest.mark.skipif(
        postgres_url() is None, reason="DATABASE_URL names no PostgreSQL"
    ),
]

K = 3
CALL = '{ complete(prompt: "Count to three.", maxTokens: 40) { text } }'


async def _fire(urls: list[str], token: str, count: int) -> list[list[str]]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=60) as client:

        async def one(index: int) -> list[str]:
            url = urls[index % len(urls)]
            answer = await client.post(url, json={"query": CALL}, headers=headers)
            return error_codes(answer.json())

        return await asyncio.gather(*(one(i) for i in range(count)))


def _ledger(database_url: str) -> tuple[int, int, int]:
    async def read() -> tuple[int, int, int]:
        connection = await asyncpg.connect(database_url)
        try:
            row = await connection.fetchrow(
                "SELECT count(*), count(DISTINCT request_id),"
                " coalesce(sum(cost_nano_usd), 0) FROM ledger"
            )
        finally:
            await connection.close()
        return row[0], row[1], row[2]

    return asyncio.run(read())


def test_replicas_admit_exactly_the_calls_the_budget_fits(
    tmp_path: Path, postgres_databases
) -> None:
    database = postgres_databases()
    upstream = Upstream()
    env = {
        "DATABASE_URL": database,
        "REDIS_URL": redis_url(),
        "OPENAI_BASE_URL": upstream.url,
    }
    replicas = [Replica(env, tmp_path, f"replica{i}") for i in range(2)]
    try:
        for replica in replicas:
            replica.wait_started()
        token = replicas[0].login()

        def set_usd_per_day(usd: float) -> None:
            variables = {"username": "test_user", "budgets": {"usdPerDay": usd}}
            answer = httpx.post(
                replicas[0].url,
                json={"query": SET_BUDGETS, "variables": variables},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert "errors" not in answer.json(), answer.json()

        # The worst case of one call, as the server prices it: a budget of 0
        # refuses it, saying what it asked for.
        set_usd_per_day(0)
        refused = httpx.post(
            replicas[1].url,
            json={"query": CALL},
            headers={"Authorization": f"Bearer {token}"},
        ).json()
        worst = refused["errors"][0]["extensions"]["requested"]
        assert worst > 0
        set_usd_per_day(K * worst)

        outcomes = asyncio.run(_fire([r.url for r in replicas], token, 20 * K))
    finally:
        for replica in replicas:
            replica.stop()  # clean: the ledger's queued rows are written
        upstream.close()

    admitted = sum(1 for codes in outcomes if not codes)
    refused_codes = {code for codes in outcomes if codes for code in codes}
    assert refused_codes == {"BUDGET_EXCEEDED"}
    assert admitted == K
    rows, distinct_requests, total_nano = _ledger(database)
    assert rows == distinct_requests == admitted
    assert total_nano <= round(K * worst * 1e9)


def test_a_killed_replicas_reservation_expires_by_itself(
    tmp_path: Path, make_api, postgres_databases
) -> None:
    database = postgres_databases()
    upstream = Upstream(hold=True)  # answers nothing until released
    budget = {"BUDGET_TOKENS_PER_DAY": "23"}  # one worst case of CALL below
    call = '{ complete(prompt: "Hi", maxTokens: 10) { text } }'
    env = {
        "DATABASE_URL": database,
        "REDIS_URL": redis_url(),
        "OPENAI_BASE_URL": upstream.url,
    }
    doomed = Replica({**env, **budget}, tmp_path, "doomed")
    clock = Clock()
    try:
        doomed.wait_started()
        survivor = make_api(
            database_url=database,
            redis_url=redis_url(),
            budget_tokens_per_day=23,
            clock=clock,
        )
        token = survivor.login()

        async def call_doomed() -> None:
            async with httpx.AsyncClient(timeout=60) as client:
                request = client.post(
                    doomed.url,
                    json={"query": call},
                    headers={"Authorization": f"Bearer {token}"},
                )
                waiting = asyncio.ensure_future(request)
                await asyncio.to_thread(upstream.received.wait, 30)
                doomed.kill()  # mid-call: its reservation is held, never settled
                with pytest.raises(httpx.TransportError):
                    await waiting

        asyncio.run(call_doomed())
        assert error_codes(survivor.post(call, token=token)) == ["BUDGET_EXCEEDED"]
        # Past the reservation's life (2 x the 30 s LLM timeout + 10 s), with
        # room for the seconds between this clock's start and the call.
        clock.advance(2 * 30 + 10 + 60)
        assert "errors" not in survivor.post(call, token=token)
    finally:
        doomed.kill()
        upstream.close()
