"""Compatibility: the API in front of llama-cpp-python's own OpenAI-compatible
server (not ours), over real HTTP, with the model file the embedded model uses.

That server refuses `json_schema` (HTTP 500), ignores `include_usage` in
streams and answers any model name: what "any OpenAI-compatible server" has to
survive. Generations are kept to a few tokens.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from gptmini_graphql.app import create_app
from tests.compat.model_server import ALIAS, CONTEXT, ModelServer, why_not_runnable
from tests.conftest import API, error_codes, make_settings

if (reason := why_not_runnable()) is not None:
    pytest.skip(reason, allow_module_level=True)
pytestmark = pytest.mark.compat

USAGE = "model usage { promptTokens completionTokens totalTokens costUsd }"
SENTIMENTS = {"POSITIVE", "NEGATIVE", "NEUTRAL", "MIXED"}


@pytest.fixture(scope="module")
def server() -> Iterator[ModelServer]:
    server = ModelServer()
    yield server
    server.stop()


@pytest.fixture
def make_app(server: ModelServer) -> Iterator[Callable[..., API]]:
    """The API against the real server, over a real HTTP client."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> API:
        settings = make_settings(
            **{
                "openai_api_key": None,
                "openai_base_url": server.api_url,
                "openai_model": ALIAS,
                "llm_timeout_seconds": 60,
                **overrides,
            }
        )
        client = TestClient(create_app(settings)).__enter__()
        clients.append(client)
        return API(client, upstream=None)  # type: ignore[arg-type]

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def answered(result: dict[str, Any], server: ModelServer) -> dict[str, Any]:
    """The data, or a failure that shows the server's side too."""
    assert "errors" not in result, f"{result['errors']}\n{server.tail()}"
    return result["data"]


def test_summarize_complete_and_translate_answer_with_usage(
    make_app, server: ModelServer
) -> None:
    api = make_app()
    data = answered(
        api.post(
            f"""{{
              summarize(text: "The cat sat on the mat all day, watching birds.", maxWords: 8)
                {{ text {USAGE} }}
              complete(prompt: "Name a colour.", maxTokens: 6, temperature: 0)
                {{ text finishReason {USAGE} }}
              translate(text: "Good morning", targetLanguage: "fr", sourceLanguage: "en")
                {{ text sourceLanguage targetLanguage {USAGE} }}
            }}""",
            token=api.login(),
        ),
        server,
    )
    for field in ("summarize", "complete", "translate"):
        answer = data[field]
        assert answer["text"].strip(), field
        assert answer["model"] == ALIAS
        usage = answer["usage"]
        assert usage["promptTokens"] > 0 and usage["completionTokens"] > 0
        assert usage["totalTokens"] == usage["promptTokens"] + usage["completionTokens"]
        assert usage["costUsd"] == 0  # the embedded model's price: nothing
    assert len(data["summarize"]["text"].split()) <= 8
    assert data["complete"]["usage"]["completionTokens"] <= 6
    assert data["complete"]["finishReason"] in {"STOP", "LENGTH"}
    assert data["translate"]["sourceLanguage"] == "en"
    assert data["translate"]["targetLanguage"] == "fr"


def test_analyze_falls_back_to_json_object_once(make_app, server: ModelServer) -> None:
    api = make_app()
    token = api.login()
    before = len(server.chat_statuses())
    first = answered(
        api.post(
            f'{{ analyze(text: "I love this!") {{ sentiment score {USAGE} }} }}',
            token=token,
        ),
        server,
    )["analyze"]
    assert first["sentiment"] in SENTIMENTS
    assert -1 <= first["score"] <= 1
    assert first["usage"]["completionTokens"] > 0
    # json_schema refused (500), json_object with the schema answered: once.
    assert server.chat_statuses()[before:] == [500, 200]

    second = answered(
        api.post('{ analyze(text: "This is awful.") { sentiment } }', token=token),
        server,
    )
    assert second["analyze"]["sentiment"] in SENTIMENTS
    assert server.chat_statuses()[before + 2 :] == [200]


def test_translate_detects_the_source_language(make_app, server: ModelServer) -> None:
    api = make_app()
    data = answered(
        api.post(
            '{ translate(text: "Good morning, my friend", targetLanguage: "de") '
            "{ text sourceLanguage targetLanguage } }",
            token=api.login(),
        ),
        server,
    )["translate"]
    # Demo-grade model: any code, as long as it is one.
    assert len(data["sourceLanguage"]) == 2 and data["sourceLanguage"].islower()
    assert data["targetLanguage"] == "de"


def test_a_refused_mode_pauses_nothing(make_app, server: ModelServer) -> None:
    api = make_app(llm_structured_output="json_schema", circuit_breaker_failures=1)
    token = api.login()
    before = len(server.chat_statuses())
    for _ in range(2):
        result = api.post('{ analyze(text: "Fine.") { sentiment } }', token=token)
        assert error_codes(result) == ["UPSTREAM_ERROR"], server.tail()
        assert result["errors"][0]["message"] == (
            "The model server refused the request: "
            "body.response_format.type: Input should be 'text' or 'json_object'"
        )
    # Not retried, not counted: plain requests go on.
    assert server.chat_statuses()[before:] == [500, 500]
    answered(
        api.post('{ complete(prompt: "Hi", maxTokens: 2) { text } }', token=token),
        server,
    )


def test_complete_stream_reports_missing_usage(make_app, server: ModelServer) -> None:
    api = make_app()
    response = api.client.post(
        "/graphql",
        json={
            "query": 'subscription { completeStream(prompt: "Hi", maxTokens: 6) '
            "{ text done finishReason model usage { totalTokens } notice } }"
        },
        headers={
            "Authorization": f"Bearer {api.login()}",
            "Accept": "text/event-stream",
        },
    )
    assert response.status_code == 200
    events = [
        json.loads(line.removeprefix("data: "))
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]
    assert all("errors" not in event for event in events), f"{events}\n{server.tail()}"
    chunks = [event["data"]["completeStream"] for event in events]
    *deltas, last = chunks
    assert "".join(chunk["text"] for chunk in deltas).strip()
    assert last["done"] is True
    assert last["finishReason"] in {"STOP", "LENGTH"}
    assert last["model"] == ALIAS
    # That server ignores stream_options.include_usage: no invented numbers.
    assert last["usage"] is None
    assert "did not report token usage" in last["notice"]


def test_a_text_too_long_names_the_context_not_our_ceiling(
    make_app, server: ModelServer
) -> None:
    api = make_app()
    text = "The quick brown fox jumps over the lazy dog. " * 200  # ~2,000 tokens
    result = api.post(
        'query T($t: String!) { translate(text: $t, targetLanguage: "fr", '
        'sourceLanguage: "en") { text } }',
        {"t": text},
        token=api.login(),
    )
    assert error_codes(result) == ["BAD_USER_INPUT"], server.tail()
    message = result["errors"][0]["message"]
    assert message.startswith("The text is too long for the model's context window")
    assert f"maximum context length is {CONTEXT} tokens" in message
    # The completion part is what this text needs, not MAX_COMPLETION_TOKENS.
    assert "4096" not in message
    assert f"{len(text) // 3 + 64} in the completion" in message


def test_readyz_knows_what_the_server_serves(make_app, server: ModelServer) -> None:
    body = make_app().client.get("/readyz").json()
    assert body["upstreams"][0]["listed"] is True
    assert body["warnings"] == []

    # An OpenAI model name: that server would answer as it, at OpenAI's price.
    wrong = make_app(openai_model="gpt-4o-mini").client.get("/readyz")
    assert wrong.status_code == 200
    price, unlisted = wrong.json()["warnings"]
    assert "is a local address, unlikely to charge that" in price
    assert f"it lists 1: {ALIAS}" in unlisted


def test_a_server_that_goes_down_is_unavailable_then_paused(make_app) -> None:
    own = ModelServer()  # this test kills it
    try:
        settings = make_settings(
            openai_api_key=None,
            openai_base_url=own.api_url,
            openai_model=ALIAS,
            circuit_breaker_failures=2,
        )
        with TestClient(create_app(settings)) as client:
            api = API(client, upstream=None)  # type: ignore[arg-type]
            token = api.login()
            query = '{ complete(prompt: "Hi", maxTokens: 2) { text } }'
            answered(api.post(query, token=token), own)
            own.kill()
            for _ in range(2):
                result = api.post(query, token=token)
                assert error_codes(result) == ["UPSTREAM_UNAVAILABLE"]
                assert "could not be reached" in result["errors"][0]["message"]
            # Unreachable: every kind of request is paused, analyze included.
            paused = api.post('{ analyze(text: "Hi") { sentiment } }', token=token)
            assert error_codes(paused) == ["UPSTREAM_UNAVAILABLE"]
            assert "paused" in paused["errors"][0]["message"]
            assert paused["errors"][0]["extensions"]["retryAfter"] >= 1
    finally:
        own.stop()
