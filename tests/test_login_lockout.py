"""Login limits that slow guessers without letting anyone lock the owner out.

Clients come from many addresses here: the app sits behind uvicorn's proxy
headers middleware, as it does behind a reverse proxy with
FORWARDED_ALLOW_IPS, so X-Forwarded-For names each request's address.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.testclient import TestClient
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gptmini_graphql.app import create_app
from tests.conftest import (
    API,
    LOGIN,
    MEMORY_AND_REDIS,
    error_codes,
    make_settings,
    redis_url,
)
from tests.fake_upstream import FakeUpstream
from tests.redis_server import RedisServer


@pytest.fixture(params=MEMORY_AND_REDIS)
def storage(request: pytest.FixtureRequest) -> str | None:
    return redis_url() if request.param == "redis" else None


@pytest.fixture
def make_proxied(upstream: FakeUpstream) -> Iterator[Callable[..., API]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> API:
        app = create_app(
            make_settings(**overrides), llm_http_client=upstream.http_client()
        )
        client = TestClient(ProxyHeadersMiddleware(app, trusted_hosts="*")).__enter__()
        clients.append(client)
        return API(client, upstream)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


class Addresses:
    """Fresh client addresses: Redis keeps counts across tests."""

    def __init__(self) -> None:
        self.prefix = f"10.{random.randrange(256)}.{random.randrange(256)}"
        self.used = 0

    def new(self) -> str:
        self.used += 1
        return f"{self.prefix}.{self.used}"


def _attempt(api: API, address: str, username: str, password: str) -> str:
    result = api.post(
        LOGIN,
        {"username": username, "password": password},
        headers={"X-Forwarded-For": address},
    )
    return (error_codes(result) or ["OK"])[0]


def _owner() -> dict[str, str]:
    return {"fake_username": f"owner-{uuid.uuid4().hex[:8]}", "fake_password": "right"}


def test_wrong_guesses_from_elsewhere_do_not_lock_the_owner_out(
    make_proxied, storage
) -> None:
    owner, addresses = _owner(), Addresses()
    api = make_proxied(login_rate_limit="10/minute", redis_url=storage, **owner)
    name = owner["fake_username"]
    attacker = addresses.new()
    codes = [_attempt(api, attacker, name, "guess") for _ in range(11)]
    assert codes == ["UNAUTHENTICATED"] * 10 + ["RATE_LIMITED"]  # per address
    assert _attempt(api, addresses.new(), name, "right") == "OK"


def test_past_the_username_threshold_each_address_gets_one_guess(
    make_proxied, storage
) -> None:
    owner, addresses = _owner(), Addresses()
    # The per-address limit is out of the way here: 10 guesses each stay under it.
    api = make_proxied(
        login_rate_limit="50/minute",
        login_username_failure_limit="20/hour",
        redis_url=storage,
        **owner,
    )
    name = owner["fake_username"]
    farm = [addresses.new() for _ in range(10)]
    codes = [
        _attempt(api, address, name, "guess") for address in farm for _ in range(10)
    ]

    # Two addresses use up the username's 20 failures; after that each new
    # address has its one guess checked, and is refused from then on.
    assert codes.count("UNAUTHENTICATED") == 20 + 8
    assert codes.count("RATE_LIMITED") == 72
    # The owner, from an address that has not failed, gets in...
    assert _attempt(api, addresses.new(), name, "right") == "OK"
    # ...while an address that has failed waits, even with the right password.
    assert _attempt(api, farm[0], name, "right") == "RATE_LIMITED"
    # Other usernames are not affected.
    assert _attempt(api, farm[0], "someone-else", "guess") == "UNAUTHENTICATED"


@pytest.fixture(params=["memory", "redis"])
def gated(request: pytest.FixtureRequest) -> tuple[str | None, Callable[[], None]]:
    """A storage, and a gate that makes requests sent next meet at it.

    In memory nothing suspends between a check and its record, so concurrent
    requests cannot interleave there. Redis is this test's own (CLIENT PAUSE
    holds every client of the server): while paused it holds every command, so
    requests sent meanwhile queue at it and then go on in step, as they do
    under load.
    """
    if request.param == "memory":
        return None, lambda: None
    server: RedisServer = request.getfixturevalue("redis_server")

    def hold() -> None:
        import redis  # here: importing redis-py imports OpenTelemetry (test_tracing)

        client = redis.Redis(port=server.port, socket_timeout=1)
        client.execute_command("CLIENT", "PAUSE", 250, "ALL")
        client.close()

    return server.url, hold


def test_concurrent_guesses_past_the_threshold_get_one_check_per_address(
    make_proxied, gated
) -> None:
    url, hold = gated
    owner, addresses = _owner(), Addresses()
    api = make_proxied(
        login_rate_limit="50/minute",
        login_username_failure_limit="2/hour",
        redis_url=url,
        **owner,
    )
    name = owner["fake_username"]

    def at_once(attempt: Callable[[int], str]) -> list[str]:
        hold()
        with ThreadPoolExecutor(max_workers=10) as pool:
            return list(pool.map(attempt, range(10)))

    # Ten at once for another user first: one Redis connection each, as a
    # server under load has (new connections would stagger the requests).
    warm = at_once(lambda i: _attempt(api, addresses.new(), f"other-{i}", "guess"))
    assert warm == ["UNAUTHENTICATED"] * 10
    for _ in range(2):  # the owner's username is now over its failure limit
        assert _attempt(api, addresses.new(), name, "guess") == "UNAUTHENTICATED"

    attacker = addresses.new()
    codes = at_once(lambda _: _attempt(api, attacker, name, "guess"))

    assert sorted(codes) == ["RATE_LIMITED"] * 9 + ["UNAUTHENTICATED"]
    # The owner's address takes its attempt too, and gets it back on success:
    # they log in twice in a row.
    home = addresses.new()
    assert _attempt(api, home, name, "right") == "OK"
    assert _attempt(api, home, name, "right") == "OK"


def _network_64() -> str:
    """A fresh IPv6 /64 (Redis keeps counts across tests), as a prefix."""
    return f"2001:db8:{random.randrange(1 << 16):x}:{random.randrange(1 << 16):x}:"


def test_an_ipv6_network_counts_as_one_address(make_proxied, storage) -> None:
    owner = _owner()
    api = make_proxied(login_rate_limit="3/minute", redis_url=storage, **owner)
    name = owner["fake_username"]
    # One /64 is one subscriber's: each of its addresses draws on one limit.
    net = _network_64()
    hosts = [f"{net}{random.randrange(1 << 16):x}:0:0:{n}" for n in range(1, 5)]
    codes = [_attempt(api, host, name, "guess") for host in hosts]
    assert codes == ["UNAUTHENTICATED"] * 3 + ["RATE_LIMITED"]
    # The next /64 is someone else; IPv4 addresses stay one each.
    assert _attempt(api, f"{_network_64()}:1", name, "guess") == "UNAUTHENTICATED"
    v4 = Addresses()
    v4_codes = [_attempt(api, v4.new(), name, "guess") for _ in range(4)]
    assert v4_codes == ["UNAUTHENTICATED"] * 4


def test_past_the_username_threshold_a_failed_ipv6_network_is_refused(
    make_proxied, storage
) -> None:
    owner = _owner()
    api = make_proxied(
        login_rate_limit="50/minute",
        login_username_failure_limit="2/hour",
        redis_url=storage,
        **owner,
    )
    name = owner["fake_username"]
    for _ in range(2):
        assert _attempt(api, f"{_network_64()}:1", name, "guess") == "UNAUTHENTICATED"
    net = _network_64()
    assert _attempt(api, f"{net}:1", name, "guess") == "UNAUTHENTICATED"
    # Another address of the same /64 is no new guesser...
    assert _attempt(api, f"{net}:2", name, "guess") == "RATE_LIMITED"
    assert _attempt(api, f"{net}abcd:1:2:3", name, "right") == "RATE_LIMITED"
    # ...while the owner, from a /64 that has not failed, gets in.
    assert _attempt(api, f"{_network_64()}:1", name, "right") == "OK"
