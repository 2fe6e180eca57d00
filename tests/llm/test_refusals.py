"""Outage or refusal: only an unwell upstream is retried and counts toward its
circuit; a refused request is answered at once, with the upstream's reason,
and pauses nothing."""

from __future__ import annotations

import httpx2
import pytest

from tests.conftest import error_codes
from tests.fake_upstream import Reply, api_error, format_type

SUMMARIZE = '{ summarize(text: "hello") { text } }'
ANALYZE = '{ analyze(text: "I love it") { sentiment } }'


@pytest.mark.parametrize(
    "refusal",
    [
        api_error(500, "1 validation error for Request\nmax_tokens\n  Input should be"),
        api_error(500, "Something broke", param="messages"),
        api_error(500, "unsupported value for temperature"),
        api_error(501, "Not Implemented"),
        api_error(400, "bad value", "invalid_value"),
        api_error(404, "The model `nope` does not exist", "model_not_found"),
    ],
)
def test_a_refusal_is_not_retried_and_says_why(make_api, refusal: Reply) -> None:
    api = make_api(llm_max_retries=3)
    token = api.login()
    api.upstream.queue(refusal)
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["UPSTREAM_ERROR"]
    message = result["errors"][0]["message"]
    reason = refusal.body["error"]["message"].split("\n")[0]  # type: ignore[index]
    assert message.startswith("The model server refused the request: ")
    assert reason in message
    assert len(api.upstream.requests) == 1


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_an_outage_is_retried(make_api, status: int) -> None:
    api = make_api(llm_max_retries=1)
    token = api.login()
    api.upstream.queue(api_error(status, "oops", None, **{"retry-after-ms": "1"}))
    assert "errors" not in api.post(SUMMARIZE, token=token)
    assert len(api.upstream.requests) == 2


def test_refusals_never_open_the_circuit(make_api) -> None:
    api = make_api(circuit_breaker_failures=1)
    token = api.login()
    api.upstream.queue(*[api_error(500, "Input should be 'text'")] * 3)
    for _ in range(3):
        assert error_codes(api.post(SUMMARIZE, token=token)) == ["UPSTREAM_ERROR"]
    assert "errors" not in api.post(SUMMARIZE, token=token)


def test_the_reason_shown_carries_no_key_and_no_echo(make_api) -> None:
    api = make_api()
    token = api.login()
    api.upstream.queue(
        api_error(
            400,
            "Bad header Bearer sk-live-abc123 for key sk-proj-XYZ; "
            "messages.0 [type=string_type, input_value=42, input_type=int] "
            + "x"
            * 500,
        )
    )
    message = api.post(SUMMARIZE, token=token)["errors"][0]["message"]
    assert "abc123" not in message and "XYZ" not in message
    assert "input_value" not in message
    assert len(message) < 400


def test_fastapi_validation_details_become_the_reason(make_api) -> None:
    api = make_api()
    token = api.login()
    detail = [{"loc": ["body", "temperature"], "msg": "Input should be <= 1"}]
    api.upstream.queue(Reply(status=422, body={"detail": detail}))
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["UPSTREAM_ERROR"]
    assert result["errors"][0]["message"].endswith(
        "body.temperature: Input should be <= 1"
    )


def test_a_context_refusal_without_a_code_is_the_users_input(make_api) -> None:
    # vLLM's wording, with no `code`.
    api = make_api()
    token = api.login()
    api.upstream.queue(
        api_error(
            400,
            "This model's maximum context length is 2048 tokens. However, you "
            "requested 2200 tokens (2100 in the messages, 100 in the completion).",
        )
    )
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert "maximum context length is 2048" in result["errors"][0]["message"]


def test_a_proxys_exception_names_are_left_out(make_api) -> None:
    # LiteLLM 1.108's wording, in front of llama-cpp-python's server.
    api = make_api()
    token = api.login()
    api.upstream.queue(
        api_error(
            400,
            "litellm.ContextWindowExceededError: litellm.BadRequestError: "
            "ContextWindowExceededError: OpenAIException - This model's maximum "
            "context length is 2048 tokens.",
            "400",
        )
    )
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert result["errors"][0]["message"] == (
        "The text is too long for the model's context window: "
        "This model's maximum context length is 2048 tokens."
    )


def test_one_kind_failing_pauses_only_that_kind(make_api) -> None:
    api = make_api(circuit_breaker_failures=2)
    token = api.login()
    # A server whose structured decoding fails, while plain text works.
    api.upstream.refused_formats["json_schema"] = api_error(500, "CUDA error")
    for _ in range(2):
        assert error_codes(api.post(ANALYZE, token=token)) == ["UPSTREAM_UNAVAILABLE"]
    paused = api.post(ANALYZE, token=token)
    assert error_codes(paused) == ["UPSTREAM_UNAVAILABLE"]
    assert "paused" in paused["errors"][0]["message"]
    assert len(api.upstream.requests) == 2

    assert "errors" not in api.post(SUMMARIZE, token=token)
    stream = api.client.post(
        "/graphql",
        json={"query": 'subscription { completeStream(prompt: "Hi") { done } }'},
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    assert '"done":true' in stream.text.replace(" ", "")
    assert [format_type(body) for body in api.upstream.requests[2:]] == [None, None]


def test_an_unreachable_server_pauses_every_kind(make_api) -> None:
    api = make_api(circuit_breaker_failures=2)
    token = api.login()
    refused = Reply(error=httpx2.ConnectError("connection refused"))
    api.upstream.queue(refused, refused)
    for _ in range(2):
        assert error_codes(api.post(ANALYZE, token=token)) == ["UPSTREAM_UNAVAILABLE"]
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["UPSTREAM_UNAVAILABLE"]
    assert "paused" in result["errors"][0]["message"]
    assert len(api.upstream.requests) == 2
