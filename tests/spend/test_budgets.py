"""Budgets and the token rate limit, through GraphQL over HTTP: refused with
the right code and extensions, reservations released on failure, settled
to the real usage, reset with their period (a clock the test moves), kept
across a restart (seeded from the ledger), and refused while their Redis
is down. In memory and, with REDIS_URL, in Redis."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gptmini_graphql.__main__ import main
from tests.conftest import API, MEMORY_AND_REDIS, Clock, error_codes, redis_url
from tests.fake_upstream import FakeUpstream, Reply, api_error, chat_completion
from tests.redis_server import RedisServer
from tests.spend.helpers import SET_BUDGETS

# Worst case of CALL: a prompt of 2 bytes bounds 3 + 2 + 8 = 13 prompt tokens,
# plus maxTokens 10: 23 tokens, 13 * 0.15 + 10 * 0.60 = 7.95 USD per 1M.
# The fake upstream then reports 100 + 20 = 120 tokens, 27e-6 USD.
CALL = '{ complete(prompt: "Hi", maxTokens: 10) { text } }'
WORST_TOKENS = 23
WORST_USD = 7.95e-6
REAL_TOKENS = 120
REAL_USD = 27e-6


@pytest.fixture(params=MEMORY_AND_REDIS)
def budget_api(request, make_api) -> Callable[..., API]:
    store = redis_url() if request.param else None
    return lambda **overrides: make_api(redis_url=store, **overrides)


def refusal(result: dict[str, Any]) -> dict[str, Any]:
    (error,) = result["errors"]
    return error["extensions"]


def next_midnight(now: float) -> str:
    day = datetime.fromtimestamp(now, UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return (day + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_usd_budget_refuses_what_could_exceed_it_until_the_day_ends(
    budget_api,
) -> None:
    clock = Clock()
    api = budget_api(budget_usd_per_day=50e-6, clock=clock)
    # An API key: it outlives the day the clock skips (an access token would not).
    created = api.post(
        'mutation { createApiKey(name: "k") { key } }', token=api.login()
    )
    token = created["data"]["createApiKey"]["key"]
    assert "errors" not in api.post(CALL, token=token)  # 27e-6 spent
    assert "errors" not in api.post(CALL, token=token)  # 54e-6: the worst case fit
    refused = api.post(CALL, token=token)
    assert error_codes(refused) == ["BUDGET_EXCEEDED"]
    assert refused["data"] is None
    assert refusal(refused) == {
        "code": "BUDGET_EXCEEDED",
        "budget": "user.usd_per_day",
        "limit": pytest.approx(50e-6),
        "remaining": 0,
        "requested": pytest.approx(WORST_USD),
        "resetsAt": next_midnight(clock.now),
    }
    clock.advance(24 * 3600)
    assert "errors" not in api.post(CALL, token=token)  # a day later


def test_a_token_budget_says_what_is_left(budget_api) -> None:
    api = budget_api(budget_tokens_per_month=2 * REAL_TOKENS + 10)
    token = api.login()
    api.post(CALL, token=token)
    api.post(CALL, token=token)
    details = refusal(api.post(CALL, token=token))
    assert details["code"] == "BUDGET_EXCEEDED"
    assert details["budget"] == "user.tokens_per_month"
    assert (details["remaining"], details["requested"]) == (10, WORST_TOKENS)
    assert details["resetsAt"].endswith("-01T00:00:00Z")


def test_the_token_rate_limit_is_rate_limited_until_the_minute_ends(budget_api) -> None:
    clock = Clock()
    api = budget_api(token_rate_limit=REAL_TOKENS + WORST_TOKENS, clock=clock)
    token = api.login()
    api.post(CALL, token=token)
    api.post(CALL, token=token)  # 120 + a worst case of 23 fit
    details = refusal(api.post(CALL, token=token))
    assert details["code"] == "RATE_LIMITED"
    assert details["budget"] == "user.tokens_per_minute"
    assert 1 <= details["retryAfter"] <= 60
    clock.advance(60)
    assert "errors" not in api.post(CALL, token=token)


def test_callers_who_find_a_new_minute_together_read_the_ledger_once(
    make_api,
) -> None:
    """At a new minute every caller finds its counter missing at once: one
    ledger query seeds it for all of them, not one each queued on the
    database (which stalled every request at :00 under load)."""
    api = make_api(token_rate_limit=10**6)
    token = api.login()
    seeding: list[str] = []

    class ReadTheLedger(logging.Handler):
        # Each statement the server sends is logged at DEBUG (db/database.py).
        def emit(self, record: logging.LogRecord) -> None:
            statement = getattr(record, "statement", "")
            if "FROM ledger" in statement and "SUM(" in statement:
                seeding.append(statement)

    statements = logging.getLogger("gptmini_graphql.db")
    handler, level = ReadTheLedger(), statements.level
    statements.addHandler(handler)
    statements.setLevel(logging.DEBUG)
    try:
        with ThreadPoolExecutor(16) as callers:
            results = list(
                callers.map(lambda _: api.post(CALL, token=token), range(16))
            )
    finally:
        statements.removeHandler(handler)
        statements.setLevel(level)
    assert all("errors" not in result for result in results), results
    assert len(seeding) == 1, seeding


def test_a_call_across_a_minute_counts_in_the_minute_it_was_reserved_in(
    budget_api, upstream: FakeUpstream
) -> None:
    """Its row is dated when it was reserved: the next minute's counter,
    seeded from the ledger, does not count it a second time."""
    clock = Clock()
    clock.now = clock.now // 60 * 60 - 0.5  # half a second to a minute
    api = budget_api(token_rate_limit=REAL_TOKENS + WORST_TOKENS, clock=clock)
    token = api.login()
    answer = upstream.default

    def across_the_minute(body: dict[str, Any]) -> Reply:
        clock.advance(1)  # the model answers in the next minute
        upstream.default = answer
        return answer(body)

    upstream.default = across_the_minute
    assert "errors" not in api.post(CALL, token=token)  # charged to minute M
    assert "errors" not in api.post(CALL, token=token)  # M + 1: 120 used
    assert "errors" not in api.post(CALL, token=token)  # 120 + 23 fit in M + 1


def test_a_reservation_is_released_when_the_upstream_fails(
    budget_api, upstream: FakeUpstream
) -> None:
    api = budget_api(budget_tokens_per_day=WORST_TOKENS)  # room for one worst case
    token = api.login()
    upstream.queue(api_error(503, "busy"))
    assert error_codes(api.post(CALL, token=token)) == ["UPSTREAM_UNAVAILABLE"]
    assert "errors" not in api.post(CALL, token=token)  # its reservation is back
    assert error_codes(api.post(CALL, token=token)) == ["BUDGET_EXCEEDED"]


def test_an_answer_without_usage_is_charged_its_reservation(
    budget_api, upstream: FakeUpstream
) -> None:
    """The upstream answered (and billed), only without saying what it used:
    charged the worst case, never nothing."""
    api = budget_api(budget_tokens_per_day=WORST_TOKENS)  # room for one worst case
    token = api.login()
    answer = chat_completion("An answer.")
    del answer["usage"]
    upstream.queue(Reply(body=answer))
    assert error_codes(api.post(CALL, token=token)) == ["UPSTREAM_ERROR"]
    assert refusal(api.post(CALL, token=token))["remaining"] == 0


def test_a_call_larger_than_the_whole_budget_is_refused_before_the_upstream(
    budget_api, upstream: FakeUpstream
) -> None:
    api = budget_api(budget_tokens_per_day=WORST_TOKENS - 1)
    token = api.login()
    assert refusal(api.post(CALL, token=token))["remaining"] == WORST_TOKENS - 1
    assert upstream.requests == []


def test_a_cached_answer_needs_no_budget(budget_api) -> None:
    # A text of its own: a shared Redis may hold answers of earlier runs.
    query = f'{{ summarize(text: "Buses {uuid.uuid4()}.") {{ cached }} }}'
    api = budget_api(cache_ttl_seconds=60, budget_tokens_per_day=1000)
    token = api.login()
    assert api.post(query, token=token)["data"]["summarize"]["cached"] is False
    for _ in range(20):  # far more than 1000 tokens, were they charged
        assert api.post(query, token=token)["data"]["summarize"]["cached"] is True


def test_what_is_left_is_in_the_results_extensions(budget_api) -> None:
    api = budget_api(budget_usd_per_month=1.0, budget_tokens_per_day=10_000)
    result = api.post(CALL, token=api.login())
    budgets = result["extensions"]["budgets"]
    assert budgets["user.tokens_per_day"]["remaining"] == 10_000 - REAL_TOKENS
    assert budgets["user.tokens_per_day"]["limit"] == 10_000
    assert budgets["user.usd_per_month"]["remaining"] == pytest.approx(1.0 - REAL_USD)


def test_responses_carry_the_ratelimit_headers(make_api) -> None:
    api = make_api(rate_limit="5/minute;100/day")
    token = api.login()
    response = api.client.post(
        "/graphql",
        json={"query": CALL},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.headers["RateLimit-Policy"] == (
        '"5-per-minute";q=5;w=60, "100-per-day";q=100;w=86400'
    )
    minute, day = response.headers["RateLimit"].split(", ")
    assert minute.startswith('"5-per-minute";r=4;t=')
    assert day.startswith('"100-per-day";r=99;t=')
    assert (
        "RateLimit"
        not in api.client.post("/graphql", json={"query": "{ __typename }"}).headers
    )


def test_admins_override_a_users_budgets_and_users_cannot(api: API, token: str) -> None:
    def set_budgets(budgets: dict[str, Any], as_token: str = token) -> dict[str, Any]:
        return api.post(
            SET_BUDGETS, {"username": "test_user", "budgets": budgets}, token=as_token
        )

    updated = set_budgets({"usdPerDay": 0})
    assert updated["data"]["setBudgets"]["budgets"]["usdPerDay"] == 0
    assert refusal(api.post(CALL, token=token))["budget"] == "user.usd_per_day"
    assert (
        set_budgets({"usdPerDay": None})["data"]["setBudgets"]["budgets"]["usdPerDay"]
        is None
    )
    assert "errors" not in api.post(CALL, token=token)
    assert error_codes(set_budgets({"tokensPerDay": -1})) == ["BAD_USER_INPUT"]
    # Past what the counters hold exactly: refused, not an internal error later.
    assert error_codes(set_budgets({"usdPerDay": 1e300})) == ["BAD_USER_INPUT"]
    assert error_codes(set_budgets({"usdPerMonth": 1_000_001})) == ["BAD_USER_INPUT"]
    assert "errors" not in api.post(CALL, token=token)  # nothing was stored

    api.post(
        'mutation { createUser(username: "bo", password: "long enough pw") { id } }',
        token=token,
    )
    assert error_codes(
        set_budgets({"usdPerDay": 99}, api.login("bo", "long enough pw"))
    ) == ["FORBIDDEN"]


SET_KEY_BUDGETS = """
mutation Set($id: ID!, $budgets: BudgetsInput!) {
  setApiKeyBudgets(id: $id, budgets: $budgets) { budgets { tokensPerDay } }
}
"""


def test_an_api_key_has_budgets_of_its_own_that_it_cannot_lift(budget_api) -> None:
    api = budget_api()
    admin = api.login()
    user = 'mutation { createUser(username: "bo", password: "long enough pw") { id } }'
    api.post(user, token=admin)
    token = api.login("bo", "long enough pw")  # not an admin: an admin's key is one
    created = api.post(
        'mutation { createApiKey(name: "ci") { key apiKey { id } } }', token=token
    )["data"]["createApiKey"]
    key, key_id = created["key"], created["apiKey"]["id"]
    limit = {"id": key_id, "budgets": {"tokensPerDay": REAL_TOKENS}}
    answer = api.post(SET_KEY_BUDGETS, limit, token=token)
    assert answer["data"]["setApiKeyBudgets"]["budgets"]["tokensPerDay"] == REAL_TOKENS

    assert "errors" not in api.post(CALL, token=key)
    assert refusal(api.post(CALL, token=key))["budget"] == "key.tokens_per_day"
    assert "errors" not in api.post(CALL, token=token)  # the user's own session
    lift = {"id": key_id, "budgets": {"tokensPerDay": None}}
    assert error_codes(api.post(SET_KEY_BUDGETS, lift, token=key)) == ["FORBIDDEN"]
    per_minute = {"id": key_id, "budgets": {"tokensPerMinute": 5}}
    assert error_codes(api.post(SET_KEY_BUDGETS, per_minute, token=token)) == [
        "BAD_USER_INPUT"
    ]


def test_a_restart_keeps_what_was_spent(make_api, tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/shared.sqlite3"
    first = make_api(database_url=url, budget_tokens_per_day=2 * REAL_TOKENS + 10)
    token = first.login()
    first.post(CALL, token=token)
    first.post(CALL, token=token)
    first.stop()
    # A new process: its counters start empty, and are seeded from the ledger.
    second = make_api(database_url=url, budget_tokens_per_day=2 * REAL_TOKENS + 10)
    assert refusal(second.post(CALL, token=token))["remaining"] == 10


def test_budgets_refuse_while_their_redis_is_down(
    make_api, redis_server: RedisServer
) -> None:
    api = make_api(redis_url=redis_server.url, budget_usd_per_day=1.0)
    token = api.login()
    assert "errors" not in api.post(CALL, token=token)
    redis_server.kill()
    details = refusal(api.post(CALL, token=token))
    assert details["code"] == "BUDGET_UNAVAILABLE"
    assert details["retryAfter"] >= 1


def test_a_failing_budget_script_is_an_outage(
    capfd, make_api, redis_server: RedisServer
) -> None:
    """Redis up but the budget script failing (here a key of the wrong type;
    READONLY after a failover or OOM alike): refused as with Redis down,
    and counted and logged as an outage, not an internal error."""
    import redis

    api = make_api(redis_url=redis_server.url, budget_usd_per_day=1.0)
    token = api.login()
    assert "errors" not in api.post(CALL, token=token)
    client = redis.Redis(port=redis_server.port, socket_timeout=1)
    suffixes = (":reserved", ":amounts", ":settled")
    spent = [
        key
        for key in client.keys("gptmini:spend:*")
        if not key.decode().endswith(suffixes)
    ]
    assert spent
    for key in spent:  # each spent counter a hash: WRONGTYPE for the script
        client.delete(key)
        client.hset(key, "not", "a counter")
    client.close()
    capfd.readouterr()

    details = refusal(api.post(CALL, token=token))

    assert details["code"] == "BUDGET_UNAVAILABLE"
    assert "redis unreachable" in capfd.readouterr().err
    metrics = api.client.get("/metrics").text.splitlines()
    assert "gptmini_redis_outages_total 1.0" in metrics
    assert "gptmini_redis_down 1.0" in metrics


def test_without_budgets_a_down_redis_stops_nothing(
    make_api, redis_server: RedisServer
) -> None:
    api = make_api(redis_url=redis_server.url)
    token = api.login()
    redis_server.kill()
    assert "errors" not in api.post(CALL, token=token)


def test_workers_without_redis_refuse_to_start_with_budgets(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("BUDGET_USD_PER_DAY", "5")
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert main(["serve", "--workers", "2"]) == 2
    assert "needs REDIS_URL" in capsys.readouterr().err
