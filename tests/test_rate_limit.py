"""Per-user rate limits, in memory and in a real Redis shared by two servers."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import MEMORY_AND_REDIS, error_codes, redis_url

SUMMARIZE = '{ summarize(text: "hello") { text } }'


@pytest.fixture(params=MEMORY_AND_REDIS)
def storage(request: pytest.FixtureRequest) -> str | None:
    return redis_url() if request.param == "redis" else None


def _user() -> dict[str, str]:
    # A fresh user per test: Redis keeps counts across tests.
    return {"fake_username": f"user-{uuid.uuid4().hex[:8]}", "fake_password": "pw"}


@pytest.mark.usefixtures("clear_of_a_minute_edge")
def test_requests_over_the_limit_are_refused_with_retry_after(
    make_api, storage
) -> None:
    user = _user()
    api = make_api(rate_limit="3/minute", redis_url=storage, **user)
    token = api.login(user["fake_username"], "pw")
    for _ in range(3):
        assert "errors" not in api.post(SUMMARIZE, token=token)
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["RATE_LIMITED"]
    assert 1 <= result["errors"][0]["extensions"]["retryAfter"] <= 60
    assert len(api.upstream.requests) == 3


@pytest.mark.usefixtures("clear_of_a_minute_edge")
def test_the_ratelimit_headers_say_what_is_left_in_either_storage(
    make_api, storage
) -> None:
    """In Redis one script charges and reads the limits; in memory `limits`
    does both: the headers must read the same."""
    user = _user()
    api = make_api(rate_limit="3/minute;4/hour", redis_url=storage, **user)
    token = api.login(user["fake_username"], "pw")

    def send() -> tuple[list[str], dict[str, int]]:
        """The error codes, and what the RateLimit header says is left."""
        response = api.client.post(
            "/graphql",
            json={"query": SUMMARIZE},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.headers["RateLimit-Policy"] == (
            '"3-per-minute";q=3;w=60, "4-per-hour";q=4;w=3600'
        )
        left = {}
        for window, seconds in zip(
            response.headers["RateLimit"].split(", "), (60, 3600), strict=True
        ):
            name, remaining, reset = window.split(";")
            # When it resets depends on how the storage aligns its windows.
            assert 0 < int(reset.removeprefix("t=")) <= seconds
            left[name] = int(remaining.removeprefix("r="))
        return error_codes(response.json()), left

    for left in (2, 1, 0):
        assert send() == ([], {'"3-per-minute"': left, '"4-per-hour"': left + 1})
    # Refused by the first limit: the second is not charged.
    assert send() == (["RATE_LIMITED"], {'"3-per-minute"': 0, '"4-per-hour"': 1})


@pytest.mark.usefixtures("clear_of_a_minute_edge")
def test_each_llm_field_counts_once(make_api, storage) -> None:
    user = _user()
    api = make_api(rate_limit="5/minute", redis_url=storage, **user)
    token = api.login(user["fake_username"], "pw")
    five = (
        "{ "
        + " ".join(f'a{i}: summarize(text: "x") {{ text }}' for i in range(5))
        + " }"
    )
    assert "errors" not in api.post(five, token=token)
    assert error_codes(api.post(SUMMARIZE, token=token)) == ["RATE_LIMITED"]


def test_fields_inside_fragments_count_too(make_api) -> None:
    user = _user()
    api = make_api(rate_limit="2/minute", **user)
    token = api.login(user["fake_username"], "pw")
    query = """
      query { ...Two ... on Query { analyze(text: "x") { score } } }
      fragment Two on Query { a: summarize(text: "x") { text } b: complete(prompt: "x") { text } }
    """
    result = api.post(query, token=token)
    assert error_codes(result) == ["RATE_LIMITED"]
    assert "needs 3 requests" in result["errors"][0]["message"]
    assert api.upstream.requests == []


def test_limits_are_per_user(make_api) -> None:
    first, second = _user(), _user()
    api = make_api(rate_limit="1/day", **first)
    token = api.login(first["fake_username"], "pw")
    assert "errors" not in api.post(SUMMARIZE, token=token)
    assert error_codes(api.post(SUMMARIZE, token=token)) == ["RATE_LIMITED"]
    # A second server with another user, sharing nothing in memory: its own limit.
    other = make_api(rate_limit="1/day", **second)
    assert "errors" not in other.post(
        SUMMARIZE, token=other.login(second["fake_username"], "pw")
    )


def test_every_limit_of_a_list_applies(make_api) -> None:
    user = _user()
    api = make_api(rate_limit="100/minute;2/hour", **user)
    token = api.login(user["fake_username"], "pw")
    api.post(SUMMARIZE, token=token)
    api.post(SUMMARIZE, token=token)
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["RATE_LIMITED"]
    assert "per hour" in result["errors"][0]["message"]


@pytest.mark.skipif(redis_url() is None, reason="REDIS_URL is not set")
def test_two_servers_sharing_redis_share_one_limit(make_api, tmp_path) -> None:
    user = _user()
    # Two replicas of one deployment: one Redis, one database.
    shared = {"redis_url": redis_url(), "database_url": f"sqlite:///{tmp_path}/db"}
    one = make_api(rate_limit="4/day", **shared, **user)
    two = make_api(rate_limit="4/day", **shared, **user)
    token = one.login(user["fake_username"], "pw")
    for api in (one, two, one, two):
        assert "errors" not in api.post(SUMMARIZE, token=token)
    assert error_codes(one.post(SUMMARIZE, token=token)) == ["RATE_LIMITED"]
    assert error_codes(two.post(SUMMARIZE, token=token)) == ["RATE_LIMITED"]


def test_an_unreachable_redis_still_limits_in_memory(capfd, make_api) -> None:
    user = _user()
    # Nothing listens on port 1: every storage call fails at once.
    api = make_api(rate_limit="1/day", redis_url="redis://127.0.0.1:1/0", **user)
    token = api.login(user["fake_username"], "pw")
    assert api.post(SUMMARIZE, token=token)["data"]["summarize"]["text"]
    assert error_codes(api.post(SUMMARIZE, token=token)) == ["RATE_LIMITED"]
    # Once per outage, not once per request.
    assert capfd.readouterr().err.count("redis unreachable") == 1
