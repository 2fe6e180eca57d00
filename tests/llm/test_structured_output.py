"""Structured output against upstreams that take different modes: each refused
mode costs one call, once; every answer is validated whatever the mode."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tests.conftest import error_codes
from tests.fake_upstream import Reply, api_error, chat_completion, format_type

ANALYZE = '{ analyze(text: "I love it") { sentiment score confidence } }'
DETECT = '{ translate(text: "Hello", targetLanguage: "fr") { text sourceLanguage } }'
# The fake upstream sends no logprobs: how sure the model was is unknown.
POSITIVE = {"sentiment": "POSITIVE", "score": 0.5, "confidence": None}
# llama-cpp-python's server (0.3.36 with FastAPI 0.165), word for word, to a
# json_schema request (the file path is where it runs).
LLAMA_CPP_REFUSAL = api_error(
    500,
    "1 validation error:\n  {'type': 'literal_error', 'loc': ('body', "
    "'response_format', 'type'), 'msg': \"Input should be 'text' or "
    "'json_object'\", 'input': 'json_schema', 'ctx': {'expected': \"'text' or "
    "'json_object'\"}}\n\n  File \"/srv/venv/lib/python3.11/site-packages/"
    'llama_cpp/server/app.py", line 376, in create_chat_completion\n'
    "    POST /v1/chat/completions",
    None,
)


def test_a_server_without_json_schema_costs_one_extra_call_once(make_api) -> None:
    api = make_api(llm_max_retries=2)
    token = api.login()
    api.upstream.refused_formats["json_schema"] = LLAMA_CPP_REFUSAL

    assert api.post(ANALYZE, token=token)["data"]["analyze"] == POSITIVE
    # The refusal is not an outage: not retried, the next mode asked at once.
    assert [format_type(body) for body in api.upstream.requests] == [
        "json_schema",
        "json_object",
    ]
    asked = api.upstream.last
    assert asked["response_format"]["schema"]["required"] == ["sentiment"]
    assert "shaped like this example" in asked["messages"][0]["content"]

    # Remembered: later requests, of any structured task, go straight there.
    assert api.post(ANALYZE, token=token)["data"]["analyze"] == POSITIVE
    assert api.post(DETECT, token=token)["data"]["translate"]["sourceLanguage"] == "en"
    later = [format_type(body) for body in api.upstream.requests[2:]]
    # The translation itself is plain text (None); its two calls run at once.
    assert sorted(later, key=str) == [None, "json_object", "json_object"]


def test_a_server_refusing_both_gets_instructions_and_our_validation(
    make_api,
) -> None:
    api = make_api()
    token = api.login()
    api.upstream.refused_formats["json_schema"] = api_error(
        400, "Unrecognized request argument supplied: json_schema"
    )
    api.upstream.refused_formats["json_object"] = api_error(
        400, "response_format is not supported", param="response_format"
    )
    answer = {"sentiment": "negative"}
    api.upstream.queue(
        Reply(body=chat_completion(f"Sure!\n```json\n{json.dumps(answer)}\n```"))
    )
    assert api.post(ANALYZE, token=token)["data"]["analyze"] == {
        "sentiment": "NEGATIVE",
        "score": -0.5,
        "confidence": None,
    }
    prompt_mode = api.upstream.last
    assert "response_format" not in prompt_mode
    assert '{"sentiment": "positive"}' in (prompt_mode["messages"][0]["content"])
    assert len(api.upstream.requests) == 3
    api.post(ANALYZE, token=token)
    assert len(api.upstream.requests) == 4


def test_a_pinned_mode_is_used_from_the_first_request(make_api) -> None:
    api = make_api(llm_structured_output="json_object")
    token = api.login()
    assert api.post(ANALYZE, token=token)["data"]["analyze"] == POSITIVE
    assert [format_type(body) for body in api.upstream.requests] == ["json_object"]


def test_a_pinned_mode_refused_is_an_upstream_error_with_the_reason(
    make_api,
) -> None:
    api = make_api(llm_structured_output="json_schema", llm_max_retries=3)
    token = api.login()
    api.upstream.refused_formats["json_schema"] = LLAMA_CPP_REFUSAL
    result = api.post(ANALYZE, token=token)
    assert error_codes(result) == ["UPSTREAM_ERROR"]
    message = result["errors"][0]["message"]
    # Their reason, without the echo of the input or the server's file paths.
    assert message == (
        "The model server refused the request: "
        "body.response_format.type: Input should be 'text' or 'json_object'"
    )
    assert len(api.upstream.requests) == 1


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("I think it is positive.", "answer: Invalid JSON"),
        ('{"sentiment": "ecstatic"}', "'ecstatic'"),
        ('{"mood": "positive"}', "sentiment: Field required"),
        ('{"sentiment": "positive", "x": 1}', "x"),
    ],
)
def test_an_answer_off_the_schema_is_an_upstream_error_that_says_why(
    make_api, content: str, problem: str
) -> None:
    api = make_api(cache_ttl_seconds=60)
    token = api.login()
    api.upstream.queue(Reply(body=chat_completion(content)))
    result = api.post(ANALYZE, token=token)
    assert error_codes(result) == ["UPSTREAM_ERROR"]
    message = result["errors"][0]["message"]
    assert message.startswith("The model's answer does not match the sentiment schema")
    assert problem in message
    # Never kept: the same request asks the model again, and gets a good answer.
    assert api.post(ANALYZE, token=token)["data"]["analyze"] == POSITIVE
    assert len(api.upstream.requests) == 2


def test_a_detected_language_off_the_list_is_named_briefly(make_api) -> None:
    api = make_api()
    token = api.login()
    api.upstream.default = lambda body: Reply(
        body=chat_completion('{"language": "xx"}' if format_type(body) else "Salut")
    )
    result = api.post(
        '{ translate(text: "Hi", targetLanguage: "fr", sourceLanguage: "en") '
        "{ text } }",
        token=token,
    )
    assert "errors" not in result  # no detection asked for
    detection = api.post(
        '{ translate(text: "Hi", targetLanguage: "fr") { text } }', token=token
    )
    assert error_codes(detection) == ["UPSTREAM_ERROR"]
    message = detection["errors"][0]["message"]
    assert message.endswith("language: 'xx' is not an allowed value")


def test_concurrent_refusals_step_down_one_mode_only(make_api) -> None:
    api = make_api()
    token = api.login()
    # Two aliased fields run at once; the refusal waits, so both are refused
    # json_schema before either hears of it.
    api.upstream.refused_formats["json_schema"] = replace(LLAMA_CPP_REFUSAL, delay=1)
    result = api.post(
        '{ a: analyze(text: "Good") { sentiment } b: analyze(text: "Fine") '
        "{ sentiment } }",
        token=token,
    )
    assert result["data"] == {
        "a": {"sentiment": "POSITIVE"},
        "b": {"sentiment": "POSITIVE"},
    }
    asked = sorted(format_type(body) for body in api.upstream.requests)
    # Not on to the prompt mode because json_schema was refused twice.
    assert asked[-2:] == ["json_schema", "json_schema"]
    assert asked[:-2] == ["json_object"] * (len(asked) - 2)
    api.post(ANALYZE, token=token)
    assert format_type(api.upstream.last) == "json_object"
