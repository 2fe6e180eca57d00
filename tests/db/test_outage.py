"""The database going away: callers the server knows keep working from its
cache, everything that must read the database says DATABASE_UNAVAILABLE
(with retryAfter, no details), and it all comes back with the database."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from tests.auth.accounts import LOGIN, SUMMARIZE, login, ok, refused
from tests.conftest import postgres_url

pytestmark = pytest.mark.skipif(
    postgres_url() is None, reason="DATABASE_URL names no PostgreSQL"
)


def _admin(statement: str) -> None:
    async def run() -> None:
        connection = await asyncpg.connect(postgres_url())
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())


def _connections(name: str, allowed: bool) -> None:
    _admin(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
    if not allowed:
        _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{name}'"
        )


def test_an_outage_is_coded_and_known_callers_keep_working(
    make_api, postgres_databases
) -> None:
    url = postgres_databases()
    name = make_url(url).database
    api = make_api(database_url=url)
    token = login(api)["accessToken"]
    assert ok(api.post(SUMMARIZE, token=token))  # the session is cached now

    _connections(name, allowed=False)
    try:
        assert ok(api.post(SUMMARIZE, token=token))
        result = api.post(LOGIN, {"username": "test_user", "password": "1234"})
        assert refused(result) == "DATABASE_UNAVAILABLE"
        assert result["errors"][0]["extensions"]["retryAfter"] >= 1
        assert "gm_test" not in str(result) and "asyncpg" not in str(result)
    finally:
        _connections(name, allowed=True)
    assert login(api)["accessToken"]
