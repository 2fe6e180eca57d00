"""How upstream failures reach the caller: each with its code, none as a crash."""

from __future__ import annotations

import httpx2
import pytest

from tests.conftest import API, error_codes
from tests.fake_upstream import Reply, api_error, chat_completion

SUMMARIZE = '{ summarize(text: "hello") { text } }'


def test_a_slow_upstream_is_an_upstream_timeout(make_api) -> None:
    api = make_api(llm_timeout_seconds=0.2)
    token = api.login()
    api.upstream.queue(Reply(delay=5, body=chat_completion("late")))
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["UPSTREAM_TIMEOUT"]
    assert "0.2 seconds" in result["errors"][0]["message"]


def test_no_retry_waits_past_the_deadline(make_api) -> None:
    api = make_api(llm_timeout_seconds=0.5, llm_max_retries=5)
    token = api.login()
    # The upstream fails fast and asks for a wait longer than the request has.
    api.upstream.default = lambda body: api_error(
        503, "busy", None, **{"retry-after": "2"}
    )
    result = api.post(SUMMARIZE, token=token)
    # Unavailable at once, rather than a timeout after waiting for nothing.
    assert error_codes(result) == ["UPSTREAM_UNAVAILABLE"]
    assert len(api.upstream.requests) == 1


def test_retries_recover_from_a_passing_failure(make_api) -> None:
    api = make_api(llm_max_retries=2)
    token = api.login()
    api.upstream.queue(api_error(503, "busy", None, **{"retry-after-ms": "10"}))
    result = api.post(SUMMARIZE, token=token)
    assert result["data"]["summarize"]["text"] == "A short answer."
    assert len(api.upstream.requests) == 2


@pytest.mark.parametrize(
    ("reply", "code", "retry_after"),
    [
        (
            api_error(429, "slow down", "rate_limit_exceeded", **{"retry-after": "7"}),
            "UPSTREAM_RATE_LIMITED",
            7,
        ),
        (
            api_error(429, "slow down", None, **{"retry-after-ms": "1500"}),
            "UPSTREAM_RATE_LIMITED",
            2,
        ),
        (api_error(429, "slow down", None), "UPSTREAM_RATE_LIMITED", None),
        (
            api_error(429, "no money", "insufficient_quota"),
            "UPSTREAM_UNAVAILABLE",
            None,
        ),
        (api_error(500, "oops"), "UPSTREAM_UNAVAILABLE", None),
        (api_error(503, "down"), "UPSTREAM_UNAVAILABLE", None),
        (api_error(401, "bad key", "invalid_api_key"), "UPSTREAM_ERROR", None),
        (api_error(400, "bad", "invalid_request_error"), "UPSTREAM_ERROR", None),
        (api_error(404, "no such model", "model_not_found"), "UPSTREAM_ERROR", None),
        (api_error(400, "too long", "context_length_exceeded"), "BAD_USER_INPUT", None),
        (Reply(error=httpx2.ConnectError("refused")), "UPSTREAM_UNAVAILABLE", None),
        (Reply(body={"id": "x", "choices": [], "model": "m"}), "UPSTREAM_ERROR", None),
    ],
)
def test_upstream_failures_map_to_codes(
    api: API, token: str, reply: Reply, code: str, retry_after: int | None
) -> None:
    api.upstream.queue(reply)
    result = api.post(SUMMARIZE, token=token)
    assert result["data"] is None
    assert error_codes(result) == [code]
    assert result["errors"][0]["extensions"].get("retryAfter") == retry_after
    # The upstream's own words (which may name accounts or keys) stay in our log.
    assert "sk-test" not in str(result)
    assert "Traceback" not in str(result)


def test_without_a_backend_llm_fields_say_how_to_configure_one(make_api) -> None:
    api = make_api(openai_api_key=None, openai_base_url=None, llm_backend="openai")
    token = api.login()
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["UPSTREAM_UNAVAILABLE"]
    message = result["errors"][0]["message"]
    assert "OPENAI_API_KEY" in message and "OPENAI_BASE_URL" in message
    readiness = api.client.get("/readyz")
    assert readiness.status_code == 503


def test_a_redirect_is_followed(make_api) -> None:
    api = make_api()
    moved = "http://moved.test/v1/chat/completions"
    api.upstream.queue(Reply(status=307, headers={"location": moved}))
    result = api.post(SUMMARIZE, token=api.login())
    assert result["data"]["summarize"]["text"] == "A short answer."
    assert api.upstream.hosts == ["upstream.test", "moved.test"]


def test_a_base_url_alone_is_enough(make_api) -> None:
    api = make_api(openai_api_key=None, openai_base_url="http://localhost:11434/v1")
    token = api.login()
    result = api.post(SUMMARIZE, token=token)
    assert result["data"]["summarize"]["text"] == "A short answer."
    assert api.client.get("/readyz").status_code == 200


def test_the_model_comes_from_settings(make_api) -> None:
    api = make_api(openai_model="llama3.1:8b")
    token = api.login()
    api.post(SUMMARIZE, token=token)
    assert api.upstream.last["model"] == "llama3.1:8b"


@pytest.mark.parametrize("told", ["inf", "nan", "-5", "soon"])
def test_a_nonsense_retry_after_is_ignored(api: API, token: str, told: str) -> None:
    api.upstream.queue(api_error(429, "slow down", None, **{"retry-after": told}))
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["UPSTREAM_RATE_LIMITED"]
    assert "retryAfter" not in result["errors"][0]["extensions"]
