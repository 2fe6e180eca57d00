"""The four tasks and a stream through GraphQL over HTTP, answered by the real
embedded model (small max tokens keep it quick)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import API, error_codes

MODEL_FILE = Path(__file__).parents[1] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
pytestmark = pytest.mark.skipif(
    not MODEL_FILE.exists(),
    reason="no model file: `make install` fetches it (python -m gptmini_graphql.llm.local.model_file)",
)
SENTIMENTS = {"POSITIVE", "NEGATIVE", "NEUTRAL", "MIXED"}


def embedded_api(make_api, **overrides) -> API:
    api = make_api(
        openai_api_key=None,
        openai_base_url=None,
        local_model_path=MODEL_FILE,
        local_threads=1,
        **overrides,
    )
    deadline = time.monotonic() + 30
    while api.client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the model did not load"
        time.sleep(0.05)
    return api


def test_the_four_tasks_answer_with_usage_and_no_cost(make_api) -> None:
    api = embedded_api(make_api)
    token = api.login()
    usage = "model usage { promptTokens completionTokens totalTokens costUsd }"
    result = api.post(
        f"""{{
          summarize(text: "The cat sat on the mat all day long, watching birds.", maxWords: 8)
            {{ text {usage} }}
          translate(text: "Good morning", targetLanguage: "fr", sourceLanguage: "en")
            {{ text sourceLanguage targetLanguage {usage} }}
          detected: translate(text: "Good morning", targetLanguage: "de")
            {{ sourceLanguage }}
          complete(prompt: "Name a colour.", maxTokens: 8, temperature: 0)
            {{ text finishReason {usage} }}
          analyze(text: "I love this wonderful day!")
            {{ sentiment score confidence {usage} }}
        }}""",
        token=token,
    )
    assert "errors" not in result, result
    data = result["data"]
    assert data["summarize"]["text"].strip()
    assert len(data["summarize"]["text"].split()) <= 8
    assert data["translate"]["text"].strip()
    assert data["translate"]["sourceLanguage"] == "en"
    assert len(data["detected"]["sourceLanguage"]) == 2
    assert data["complete"]["text"]
    assert data["complete"]["finishReason"] in {"STOP", "LENGTH"}
    assert data["analyze"]["sentiment"] in SENTIMENTS
    assert -1 <= data["analyze"]["score"] <= 1
    assert 0 <= data["analyze"]["confidence"] <= 1
    for field in ("summarize", "translate", "complete", "analyze"):
        answer = data[field]
        assert answer["model"] == "smollm2-135m-instruct"
        assert answer["usage"]["promptTokens"] > 0
        assert answer["usage"]["completionTokens"] > 0
        assert answer["usage"]["costUsd"] == 0


def test_a_stream_ends_with_the_models_own_usage(make_api) -> None:
    api = embedded_api(make_api)
    token = api.login()
    query = (
        'subscription { completeStream(prompt: "Count to ten.", maxTokens: 12, '
        "temperature: 0) { text done finishReason model usage { completionTokens } } }"
    )
    with api.client.stream(
        "POST",
        "/graphql",
        json={"query": query},
        headers={"Accept": "text/event-stream", "Authorization": f"Bearer {token}"},
    ) as response:
        events = [
            json.loads(line.removeprefix("data: "))["data"]["completeStream"]
            for line in response.iter_lines()
            if line.startswith("data: {")
        ]
    deltas, last = events[:-1], events[-1]
    assert deltas and all(not event["done"] for event in deltas)
    assert last["done"] and last["model"] == "smollm2-135m-instruct"
    assert last["usage"]["completionTokens"] == 12 == len(deltas)
    assert last["finishReason"] == "LENGTH"


class LongGeneration(threading.Thread):
    """A 400-token stream in the background; `writing` is set at its first token,
    so the model is known to be busy from then on."""

    def __init__(self, api: API, token: str) -> None:
        super().__init__()
        self.api, self.token = api, token
        self.writing = threading.Event()
        self.finished = False

    def run(self) -> None:
        query = 'subscription { completeStream(prompt: "Tell a long story.", maxTokens: 400) { done } }'
        with self.api.client.stream(
            "POST",
            "/graphql",
            json={"query": query},
            headers={
                "Accept": "text/event-stream",
                "Authorization": f"Bearer {self.token}",
            },
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    self.writing.set()
        self.finished = True

    def __enter__(self) -> LongGeneration:
        self.start()
        assert self.writing.wait(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        self.join()


def test_a_long_generation_does_not_block_other_requests(make_api) -> None:
    api = embedded_api(make_api)
    token = api.login()
    with LongGeneration(api, token) as generation:
        # Answered while the model is still writing its 400 tokens.
        assert api.client.get("/healthz").status_code == 200
        assert api.login()
        assert not generation.finished


def test_a_full_queue_is_upstream_rate_limited(make_api) -> None:
    api = embedded_api(make_api, local_queue_size=0)  # one generating, none waiting
    token = api.login()
    with LongGeneration(api, token):
        result = api.post('{ analyze(text: "fine") { sentiment } }', token=token)
    assert error_codes(result) == ["UPSTREAM_RATE_LIMITED"]
    error = result["errors"][0]
    # Our own model's words, not a provider's: it is busy, for about how long.
    assert error["message"].startswith("The local model is busy (1 generating")
    assert error["extensions"]["retryAfter"] >= 1


def test_text_beyond_the_context_is_bad_user_input(make_api) -> None:
    api = embedded_api(make_api, local_context_size=256)
    token = api.login()
    result = api.post(
        "query S($t: String!) { summarize(text: $t) { text } }",
        {"t": "word " * 600},
        token=token,
    )
    assert error_codes(result) == ["BAD_USER_INPUT"]
    assert "256 tokens" in result["errors"][0]["message"]


def test_the_embedded_models_answers_are_cached_too(make_api) -> None:
    api = embedded_api(make_api, cache_ttl_seconds=60)
    token = api.login()
    query = '{ analyze(text: "Sunny and warm.") { sentiment cached } }'
    first = api.post(query, token=token)["data"]["analyze"]
    second = api.post(query, token=token)["data"]["analyze"]
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["sentiment"] == first["sentiment"]
