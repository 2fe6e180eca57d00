from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from gptmini_graphql.app import create_app
from gptmini_graphql.settings import Settings
from gptmini_graphql.tracing import Tracing
from tests.fake_upstream import FakeUpstream
from tests.redis_server import RedisServer

LOGIN = """
mutation Login($username: String!, $password: String!) {
  login(username: $username, password: $password) { accessToken expiresAt expiresIn }
}
"""


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test: no .env, no Redis, no response cache and a fake
    upstream unless asked (so repeated requests reach the upstream); a
    database in memory unless asked (whatever DATABASE_URL says)."""
    values: dict[str, Any] = {
        "database_url": "sqlite://",
        "cache_ttl_seconds": 0,
        "openai_api_key": "sk-test",
        "openai_base_url": "http://upstream.test/v1",
        "redis_url": None,
        "llm_max_retries": 0,
        "rate_limit": "1000/minute",
        "login_rate_limit": "100/minute",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


class API:
    """A client of the running app that speaks GraphQL over HTTP."""

    def __init__(self, client: TestClient, upstream: FakeUpstream) -> None:
        self.client = client
        self.upstream = upstream

    def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        response = self.client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers=all_headers,
        )
        assert response.status_code == 200, response.text
        return response.json()

    def login(self, username: str = "test_user", password: str = "1234") -> str:
        result = self.post(LOGIN, {"username": username, "password": password})
        assert "errors" not in result, result
        return result["data"]["login"]["accessToken"]


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream()
    yield upstream
    upstream.close()


@pytest.fixture
def make_api(upstream: FakeUpstream, tmp_path: Path) -> Iterator[Callable[..., API]]:
    """Each app gets a database file of its own unless `database_url` is given
    (replicas of one deployment share one)."""
    clients: list[TestClient] = []
    numbers = itertools.count()

    def make(
        *,
        clock: Callable[[], float] | None = None,
        timer: Callable[[], float] | None = None,
        tracing: Tracing | None = None,
        **overrides: Any,
    ) -> API:
        overrides.setdefault(
            "database_url", f"sqlite:///{tmp_path}/app{next(numbers)}.sqlite3"
        )
        clocks = {"clock": clock, "timer": timer}
        app = create_app(
            make_settings(**overrides),
            llm_http_client=upstream.http_client(),
            **{name: value for name, value in clocks.items() if value is not None},
            tracing=tracing,
        )
        client = TestClient(app).__enter__()
        clients.append(client)
        api = API(client, upstream)

        def stop() -> None:  # a server's shutdown, before the test ends
            clients.remove(client)
            client.__exit__(None, None, None)

        api.stop = stop  # type: ignore[attr-defined]
        return api

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def clear_of_a_minute_edge() -> None:
    """In memory, `limits` aligns its windows to the clock's minutes, and the
    previous minute's count weighs (floored) less than a whole request just
    after an edge: a test that fills a per-minute limit and expects the next
    request refused must not straddle one. (Per-day limits need not care.)"""
    left = 60 - time.time() % 60
    if left < 5:
        time.sleep(left + 0.1)


@pytest.fixture
def api(make_api: Callable[..., API]) -> API:
    return make_api()


@pytest.fixture
def token(api: API) -> str:
    return api.login()


def error_codes(result: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in result.get("errors", [])]


def redis_url() -> str | None:
    return os.environ.get("REDIS_URL")


# For tests that must hold with state in memory and in a real Redis alike.
MEMORY_AND_REDIS = [
    pytest.param(None, id="memory"),
    pytest.param(
        "redis",
        id="redis",
        marks=pytest.mark.skipif(redis_url() is None, reason="REDIS_URL is not set"),
    ),
]


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of the test's own, to kill, freeze and restart."""
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server binary installed")
    server = RedisServer()
    server.start()
    yield server
    server.stop()


class Clock:
    """A clock tests move by hand: expiry without sleeping."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))  # whole seconds, as tokens keep them

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def postgres_url() -> str | None:
    url = os.environ.get("DATABASE_URL")
    return url if url and url.startswith("postgres") else None


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Callable[[], str]]:
    """Makes fresh PostgreSQL databases on the DATABASE_URL server, and drops
    them (only them) when the session ends."""
    import asyncpg
    from sqlalchemy.engine import make_url

    base = postgres_url()
    assert base is not None
    created: list[str] = []

    def execute(statement: str) -> None:
        async def run() -> None:
            connection = await asyncpg.connect(base)
            try:
                await connection.execute(statement)
            finally:
                await connection.close()

        asyncio.run(run())

    def create() -> str:
        name = f"gm_test_{uuid.uuid4().hex[:12]}"
        execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return make_url(base).set(database=name).render_as_string(hide_password=False)

    yield create
    for name in created:
        execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(
                postgres_url() is None, reason="DATABASE_URL names no PostgreSQL"
            ),
        ),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, on SQLite and (with DATABASE_URL) on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/users.sqlite3"
    return request.getfixturevalue("postgres_databases")()
