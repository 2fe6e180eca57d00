"""Retries, the circuit breaker and the fallback upstream, counted at a fake
upstream that fails on purpose."""

from __future__ import annotations

import pytest

from tests.conftest import API, Clock, error_codes
from tests.fake_upstream import Reply, api_error, chat_completion

SUMMARIZE = '{ summarize(text: "hello") { text model } }'


@pytest.mark.parametrize(
    "failure",
    [
        api_error(500, "oops"),
        api_error(503, "busy"),
        api_error(429, "slow down", "rate_limit_exceeded"),
        api_error(408, "request timeout"),
    ],
)
def test_passing_failures_are_retried(make_api, failure: Reply) -> None:
    api = make_api(llm_max_retries=3)
    token = api.login()
    failure.headers["retry-after-ms"] = "1"
    api.upstream.queue(failure, failure)
    result = api.post(SUMMARIZE, token=token)
    assert result["data"]["summarize"]["text"] == "A short answer."
    assert len(api.upstream.requests) == 3


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (api_error(429, "no money", "insufficient_quota"), "UPSTREAM_UNAVAILABLE"),
        (api_error(400, "bad request", "invalid_request_error"), "UPSTREAM_ERROR"),
        (api_error(401, "bad key", "invalid_api_key"), "UPSTREAM_ERROR"),
        (api_error(400, "too long", "context_length_exceeded"), "BAD_USER_INPUT"),
    ],
)
def test_refusals_are_not_retried(make_api, failure: Reply, code: str) -> None:
    api = make_api(llm_max_retries=3)
    token = api.login()
    api.upstream.queue(failure)
    assert error_codes(api.post(SUMMARIZE, token=token)) == [code]
    assert len(api.upstream.requests) == 1


def test_retries_stop_at_the_configured_count(make_api) -> None:
    api = make_api(llm_max_retries=2)
    token = api.login()
    api.upstream.default = lambda body: api_error(
        503, "busy", None, **{"retry-after-ms": "1"}
    )
    assert error_codes(api.post(SUMMARIZE, token=token)) == ["UPSTREAM_UNAVAILABLE"]
    assert len(api.upstream.requests) == 3


def _with_breaker(make_api, failures: int) -> tuple[API, Clock, str]:
    """An app whose circuit opens after `failures` outages in a row, for 30 s
    of a clock the test moves; the upstream is down. (app, clock, token)"""
    timer = Clock()
    api = make_api(
        timer=timer,
        llm_max_retries=0,
        circuit_breaker_failures=failures,
        circuit_breaker_reset_seconds=30,
    )
    token = api.login()
    api.upstream.down.add("upstream.test")
    return api, timer, token


def test_an_open_circuit_fails_fast_then_a_probe_closes_it(make_api) -> None:
    api, timer, token = _with_breaker(make_api, failures=2)
    for _ in range(2):
        assert error_codes(api.post(SUMMARIZE, token=token)) == ["UPSTREAM_UNAVAILABLE"]
    assert len(api.upstream.requests) == 2

    # Open: refused without asking the upstream, with a time to come back.
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["UPSTREAM_UNAVAILABLE"]
    assert result["errors"][0]["extensions"]["retryAfter"] == 30
    assert len(api.upstream.requests) == 2

    # Still open until the reset time is over, upstream back or not.
    api.upstream.down.clear()
    timer.advance(29)
    assert error_codes(api.post(SUMMARIZE, token=token)) == ["UPSTREAM_UNAVAILABLE"]
    assert len(api.upstream.requests) == 2

    # After the reset time one request probes; the upstream is back, so it closes.
    timer.advance(1)
    assert "errors" not in api.post(SUMMARIZE, token=token)
    assert "errors" not in api.post(SUMMARIZE, token=token)
    assert len(api.upstream.requests) == 4


def test_a_failed_probe_reopens_the_circuit(make_api) -> None:
    api, timer, token = _with_breaker(make_api, failures=1)
    api.post(SUMMARIZE, token=token)  # opens
    timer.advance(30)
    api.post(SUMMARIZE, token=token)  # the probe, failing
    api.post(SUMMARIZE, token=token)  # open again: not sent
    assert len(api.upstream.requests) == 2


def test_refusals_do_not_open_the_circuit(make_api) -> None:
    api = make_api(llm_max_retries=0, circuit_breaker_failures=2)
    token = api.login()
    api.upstream.queue(
        api_error(400, "bad"), api_error(400, "bad"), api_error(400, "bad")
    )
    for _ in range(3):
        api.post(SUMMARIZE, token=token)
    assert "errors" not in api.post(SUMMARIZE, token=token)
    assert len(api.upstream.requests) == 4


FALLBACK = {
    "llm_fallback_base_url": "http://fallback.test/v1",
    "llm_fallback_model": "backup-model",
    "llm_max_retries": 0,
}


def test_the_fallback_answers_while_the_first_upstream_is_down(make_api) -> None:
    api = make_api(**FALLBACK)
    token = api.login()
    api.upstream.down.add("upstream.test")
    api.upstream.default = lambda body: Reply(
        body=chat_completion("From the fallback.", model=body["model"])
    )
    result = api.post(SUMMARIZE, token=token)
    assert result["data"]["summarize"] == {
        "text": "From the fallback.",
        "model": "backup-model",
    }
    assert api.upstream.hosts == ["upstream.test", "fallback.test"]
    assert api.upstream.requests[1]["model"] == "backup-model"


def test_the_fallback_is_not_asked_when_the_request_is_refused(make_api) -> None:
    api = make_api(**FALLBACK)
    token = api.login()
    api.upstream.queue(api_error(400, "bad request"))
    assert error_codes(api.post(SUMMARIZE, token=token)) == ["UPSTREAM_ERROR"]
    assert api.upstream.hosts == ["upstream.test"]


def test_with_both_down_the_caller_hears_unavailable(make_api) -> None:
    api = make_api(**FALLBACK)
    token = api.login()
    api.upstream.down.update({"upstream.test", "fallback.test"})
    assert error_codes(api.post(SUMMARIZE, token=token)) == ["UPSTREAM_UNAVAILABLE"]
    assert api.upstream.hosts == ["upstream.test", "fallback.test"]
