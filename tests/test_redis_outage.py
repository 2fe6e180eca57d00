"""Rate limits while their Redis is down: a Redis of the test's own, killed
or frozen (SIGSTOP) mid-test, then brought back.

Each limit follows its outage policy: by default each process counts the
same limits in memory, so a dead Redis never means unlimited password
guesses or unlimited spend.
"""

from __future__ import annotations

import time
import uuid

import pytest
from pydantic import ValidationError

from gptmini_graphql.settings import Settings
from tests.conftest import API, LOGIN, error_codes
from tests.redis_server import RedisServer

SUMMARIZE = '{ summarize(text: "hello") { text } }'
OUTAGE_LOGGED = "redis unreachable"


def _user() -> dict[str, str]:
    return {"fake_username": f"user-{uuid.uuid4().hex[:8]}", "fake_password": "pw"}


def _metric(api: API, name: str) -> float:
    for line in api.client.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _login_codes(api: API, username: str, password: str, times: int) -> list[str]:
    codes = []
    for _ in range(times):
        result = api.post(LOGIN, {"username": username, "password": password})
        codes.extend(error_codes(result) or ["OK"])
    return codes


OUTAGES = ["killed", "frozen"]


def _take_down(server: RedisServer, how: str) -> None:
    server.kill() if how == "killed" else server.freeze()


@pytest.mark.parametrize("how", OUTAGES)
def test_wrong_passwords_stay_limited_with_redis_down(
    capfd, make_api, redis_server: RedisServer, how: str
) -> None:
    user = _user()
    api = make_api(redis_url=redis_server.url, login_rate_limit="10/minute", **user)
    assert redis_server.keys() == []
    assert _login_codes(api, user["fake_username"], "wrong", 1) == ["UNAUTHENTICATED"]
    assert redis_server.keys()  # counted in Redis while it was up
    outages = _metric(api, "gptmini_redis_outages_total")
    capfd.readouterr()

    _take_down(redis_server, how)
    codes = _login_codes(api, user["fake_username"], "wrong", 100)

    # The same 10 a minute as with Redis up (this process had seen none of
    # the first attempt: it counts from the outage on).
    assert codes.count("UNAUTHENTICATED") == 10
    assert codes.count("RATE_LIMITED") == 90
    assert capfd.readouterr().err.count(OUTAGE_LOGGED) == 1
    assert _metric(api, "gptmini_redis_outages_total") == outages + 1
    assert _metric(api, "gptmini_redis_down") == 1


@pytest.mark.parametrize("how", OUTAGES)
def test_llm_requests_stay_limited_with_redis_down(
    make_api, redis_server: RedisServer, how: str
) -> None:
    user = _user()
    api = make_api(redis_url=redis_server.url, rate_limit="20/minute", **user)
    token = api.login(user["fake_username"], "pw")

    _take_down(redis_server, how)
    codes = [
        (error_codes(api.post(SUMMARIZE, token=token)) or ["OK"])[0] for _ in range(30)
    ]

    assert codes.count("OK") == 20
    assert codes.count("RATE_LIMITED") == 10
    assert len(api.upstream.requests) == 20


def test_limits_go_back_to_redis_when_it_answers_again(
    capfd, make_api, redis_server: RedisServer
) -> None:
    user = _user()
    api = make_api(redis_url=redis_server.url, login_rate_limit="1000/minute", **user)
    redis_server.kill()
    _login_codes(api, user["fake_username"], "wrong", 3)
    redis_server.start()  # empty, on the same port
    assert redis_server.keys() == []

    # One request every few seconds probes Redis; the first answer ends the outage.
    deadline = time.monotonic() + 30
    while not redis_server.keys():
        assert time.monotonic() < deadline, "the limits never went back to Redis"
        _login_codes(api, user["fake_username"], "wrong", 1)
        time.sleep(0.2)
    log = capfd.readouterr().err
    assert log.count(OUTAGE_LOGGED) == 1
    assert log.count("redis reachable again") == 1
    assert _metric(api, "gptmini_redis_down") == 0


def test_logins_can_be_refused_while_redis_is_down(
    make_api, redis_server: RedisServer
) -> None:
    user = _user()
    api = make_api(
        redis_url=redis_server.url, login_rate_limit_redis_outage="closed", **user
    )
    redis_server.kill()
    result = api.post(LOGIN, {"username": user["fake_username"], "password": "pw"})
    assert error_codes(result) == ["RATE_LIMITED"]
    assert result["errors"][0]["extensions"]["retryAfter"] >= 1


@pytest.mark.parametrize(("policy", "admitted"), [("open", 3), ("closed", 0)])
def test_llm_requests_follow_their_outage_policy(
    make_api, redis_server: RedisServer, policy: str, admitted: int
) -> None:
    user = _user()
    api = make_api(
        redis_url=redis_server.url,
        rate_limit="1/day",
        rate_limit_redis_outage=policy,
        **user,
    )
    token = api.login(user["fake_username"], "pw")
    redis_server.kill()
    codes = [
        (error_codes(api.post(SUMMARIZE, token=token)) or ["OK"])[0] for _ in range(3)
    ]
    assert codes.count("OK") == admitted
    assert codes.count("RATE_LIMITED") == 3 - admitted


def test_logins_never_fail_open() -> None:
    with pytest.raises(
        ValidationError,
        match="login_rate_limit_redis_outage",
    ):
        Settings(_env_file=None, login_rate_limit_redis_outage="open")
