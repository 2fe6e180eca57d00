from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from gptmini_graphql.app import create_app
from gptmini_graphql.settings import Settings
from tests.fake_upstream import FakeUpstream
from tests.redis_server import RedisServer

LOGIN = """
mutation Login($username: String!, $password: String!) {
  login(username: $username, password: $password) { accessToken expiresAt expiresIn }
}
"""


def make_settings(**overrides: Any) -> Settings:
    """Settings for a test: no .env, no Redis, no response cache and a fake
    upstream unless asked (so repeated requests reach the upstream)."""
    values: dict[str, Any] = {
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
def upstream() -> FakeUpstream:
    return FakeUpstream()


@pytest.fixture
def make_api(upstream: FakeUpstream) -> Iterator[Callable[..., API]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> API:
        app = create_app(
            make_settings(**overrides), llm_http_client=upstream.http_client()
        )
        client = TestClient(app).__enter__()
        clients.append(client)
        return API(client, upstream)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


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
