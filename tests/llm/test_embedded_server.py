"""The embedded model's server end to end: the real GGUF behind real HTTP,
through the SDK, in a child process of its own.

`python -m gptmini_graphql llm serve` runs on a free loopback port for the
whole module; every test talks to it with `openai.AsyncOpenAI` over `httpx2`,
as the app's tasks do. A native crash in the child fails the test that was
running, with the child's stderr, never the whole run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

from gptmini_graphql.llm.local.server import create_embedded_app
from gptmini_graphql.settings import Settings
from tests.child_server import ChildServer, ChildServerFailed, free_port
from tests.model_process import MODEL_FILE

SETTINGS = Settings(_env_file=None, local_model_path=MODEL_FILE, local_queue_size=1)
if not MODEL_FILE.is_file():
    pytest.skip(
        f"no model file at {MODEL_FILE}: "
        "run `python -m gptmini_graphql.llm.local.model_file`",
        allow_module_level=True,
    )

HELLO = [{"role": "user", "content": "Say hello."}]
SENTIMENT = {
    "type": "object",
    "properties": {"sentiment": {"enum": ["positive", "negative", "neutral"]}},
    "required": ["sentiment"],
    "additionalProperties": False,
}
# A grammar that cannot finish before the context is full: a generation that
# keeps the worker busy for many seconds unless it is stopped.
ENDLESS = {
    "type": "json_schema",
    "json_schema": {
        "name": "numbers",
        "schema": {
            "type": "object",
            "properties": {
                "numbers": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 2000,
                }
            },
            "required": ["numbers"],
        },
    },
}
LONG_STREAM: dict[str, Any] = {
    "messages": [{"role": "user", "content": "List many numbers."}],
    "response_format": ENDLESS,
    "stream": True,
}


class ModelServer:
    """`llm serve` in a child process, started again if a test crashed it."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.server: ChildServer | None = None

    def running(self) -> str:
        if self.server is not None and self.server.running:
            return self.server.url
        port = free_port()
        environment = {
            "LOCAL_MODEL_PATH": str(MODEL_FILE),
            "LOCAL_QUEUE_SIZE": str(SETTINGS.local_queue_size),
            # One thread leaves a core to the server's loop and the test client:
            # llama.cpp's threads spin, and slow down sharply when oversubscribed.
            "LOCAL_THREADS": "1",
        }
        argv = [sys.executable, "-X", "faulthandler", "-m", "gptmini_graphql"]
        self.server = ChildServer(
            [*argv, "llm", "serve", "--port", str(port)],
            port=port,
            log=self.log,
            env=environment,
        ).start()
        self.server.wait_ready("/readyz", within=60)
        return self.server.url

    def check_alive(self) -> None:
        assert self.server is not None
        try:
            self.server.check_alive()
        except ChildServerFailed as failure:
            pytest.fail(str(failure))

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="module")
def model_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    server = ModelServer(tmp_path_factory.mktemp("model") / "stderr.log")
    yield server
    server.stop()


@pytest.fixture
def base_url(model_server: ModelServer) -> Iterator[str]:
    yield model_server.running()
    model_server.check_alive()  # a crash fails this test, with its stderr


@contextlib.asynccontextmanager
async def sdk(base_url: str, seconds: float = 60) -> AsyncIterator[openai.AsyncOpenAI]:
    async with httpx2.AsyncClient(timeout=seconds) as http:
        yield openai.AsyncOpenAI(
            base_url=f"{base_url}/v1",
            api_key="unused",
            http_client=http,
            max_retries=0,
            timeout=seconds,
        )


def run(coroutine: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(120):
            return await coroutine

    return asyncio.run(bounded())


async def in_flight(base_url: str) -> int:
    async with httpx2.AsyncClient() as http:
        response = await http.get(f"{base_url}/readyz")
    assert response.status_code == 200
    return response.json()["in_flight"]


async def until_in_flight(base_url: str, count: int, within: float = 5) -> None:
    """Wait until `count` requests are admitted (generating or waiting)."""
    deadline = time.monotonic() + within
    while await in_flight(base_url) != count:
        assert time.monotonic() < deadline, f"not {count} requests in flight"
        await asyncio.sleep(0.02)


def test_answers_with_usage_from_the_models_tokenizer(base_url: str) -> None:
    async def main() -> None:
        async with sdk(base_url) as client:
            answer = await client.chat.completions.create(
                model="anything", messages=HELLO, max_tokens=8, temperature=0
            )
        assert answer.object == "chat.completion"
        assert answer.model == SETTINGS.local_model_name
        choice = answer.choices[0]
        assert choice.message.role == "assistant"
        assert choice.message.content
        assert choice.finish_reason in ("stop", "length")
        usage = answer.usage
        assert usage is not None
        assert usage.prompt_tokens > 5  # the chat template adds its own tokens
        assert 1 <= usage.completion_tokens <= 8
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        assert usage.prompt_tokens_details is not None
        assert usage.prompt_tokens_details.cached_tokens == 0

    run(main())


def test_streams_text_then_a_usage_chunk(base_url: str) -> None:
    async def main() -> None:
        async with sdk(base_url) as client:
            stream = await client.chat.completions.create(
                model="anything",
                messages=HELLO,
                max_tokens=12,
                stream=True,
                stream_options={"include_usage": True},
            )
            chunks = [chunk async for chunk in stream]
        assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
        *answer, last = chunks
        assert last.choices == []
        assert last.usage is not None
        assert 1 <= last.usage.completion_tokens <= 12
        text = "".join(c.choices[0].delta.content or "" for c in answer)
        assert text
        assert answer[-1].choices[0].finish_reason in ("stop", "length")

    run(main())


def test_stop_strings_end_the_answer(base_url: str) -> None:
    async def main() -> None:
        async with sdk(base_url) as client:
            answer = await client.chat.completions.create(
                model="anything",
                messages=[{"role": "user", "content": "Tell me about the sea."}],
                max_tokens=16,
                stop=[" "],
            )
        assert " " not in (answer.choices[0].message.content or "")
        assert answer.choices[0].finish_reason == "stop"

    run(main())


def test_json_schema_answers_parse_and_match(base_url: str) -> None:
    async def main() -> None:
        async with sdk(base_url) as client:
            answer = await client.chat.completions.create(
                model="anything",
                messages=[
                    {"role": "system", "content": "Classify the sentiment."},
                    {"role": "user", "content": "I love this product!"},
                ],
                max_tokens=32,
                response_format={
                    "type": "json_schema",
                    "json_schema": {
                        "name": "sentiment",
                        "schema": SENTIMENT,
                        "strict": True,
                    },
                },
            )
        data = json.loads(answer.choices[0].message.content or "")
        assert set(data) == {"sentiment"}
        assert data["sentiment"] in SENTIMENT["properties"]["sentiment"]["enum"]

    run(main())


def test_logprobs_list_each_token_and_its_likeliest_alternatives(
    base_url: str,
) -> None:
    async def main() -> None:
        async with sdk(base_url) as client:
            answer = await client.chat.completions.create(
                model="anything",
                messages=HELLO,
                max_tokens=4,
                temperature=0,
                logprobs=True,
                top_logprobs=3,
            )
        choice = answer.choices[0]
        assert choice.logprobs is not None and choice.logprobs.content
        entries = choice.logprobs.content
        assert "".join(e.token for e in entries) == choice.message.content
        for entry in entries:
            assert entry.logprob <= 0
            assert len(entry.top_logprobs) == 3
            # At temperature 0 with no grammar, the token is the likeliest one.
            assert entry.top_logprobs[0].token == entry.token

    run(main())


def test_a_full_queue_answers_429_with_retry_after(base_url: str) -> None:
    async def main() -> None:
        async with sdk(base_url) as client:
            # One generating and one waiting fill a queue of size 1.
            running = await client.chat.completions.create(model="m", **LONG_STREAM)
            waiting = asyncio.create_task(
                client.chat.completions.create(model="m", **LONG_STREAM)
            )
            await until_in_flight(base_url, 2)
            with pytest.raises(openai.RateLimitError) as refused:
                await client.chat.completions.create(
                    model="m", messages=HELLO, max_tokens=4
                )
            waiting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            await running.close()
        assert refused.value.status_code == 429
        assert refused.value.code == "rate_limit_exceeded"
        assert int(refused.value.response.headers["retry-after"]) >= 1
        await until_in_flight(base_url, 0)

    run(main())


def test_closing_a_stream_stops_its_generation(base_url: str) -> None:
    async def main() -> None:
        async with sdk(base_url) as client:
            stream = await client.chat.completions.create(model="m", **LONG_STREAM)
            pieces = 0
            async for _ in stream:
                pieces += 1
                if pieces == 5:
                    break
            await stream.close()
            # Left alone it would run to the end of the context (many seconds);
            # stopped, the worker is free for the next request.
            await until_in_flight(base_url, 0)
            answer = await client.chat.completions.create(
                model="m", messages=HELLO, max_tokens=4
            )
        assert answer.choices[0].message.content is not None

    run(main())


def test_a_client_timeout_stops_its_generation(base_url: str) -> None:
    async def main() -> None:
        body = {k: v for k, v in LONG_STREAM.items() if k != "stream"}
        async with sdk(base_url, seconds=0.5) as client:
            with pytest.raises(openai.APITimeoutError):
                await client.chat.completions.create(model="m", **body)
        await until_in_flight(base_url, 0)

    run(main())


def test_health_answers_while_a_long_generation_runs(base_url: str) -> None:
    async def main() -> None:
        async with sdk(base_url) as client, httpx2.AsyncClient() as http:
            stream = await client.chat.completions.create(model="m", **LONG_STREAM)
            await anext(aiter(stream))
            health = await http.get(f"{base_url}/healthz")
            # Answered while the generation still runs, not after it.
            assert await in_flight(base_url) == 1
            await stream.close()
        assert health.status_code == 200
        await until_in_flight(base_url, 0)

    run(main())


def test_input_longer_than_the_context_is_a_400(base_url: str) -> None:
    async def main() -> None:
        long_text = "the sea is blue and wide " * 600  # ~3000 tokens
        async with sdk(base_url) as client:
            with pytest.raises(openai.BadRequestError) as rejected:
                await client.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": long_text}],
                    max_tokens=4,
                )
        error = rejected.value
        assert error.status_code == 400
        assert error.code == "context_length_exceeded"
        assert error.type == "invalid_request_error"
        assert f"limit is {SETTINGS.local_context_size} tokens" in error.message

    run(main())


def test_malformed_requests_are_400_in_openai_shape(base_url: str) -> None:
    with httpx2.Client(base_url=base_url) as http:
        no_messages = http.post(
            "/v1/chat/completions", json={"model": "m", "messages": []}
        )
        not_json = http.post("/v1/chat/completions", content=b"{oops")
    assert no_messages.status_code == 400
    assert no_messages.json()["error"]["param"] == "messages"
    assert no_messages.json()["error"]["type"] == "invalid_request_error"
    assert not_json.status_code == 400
    assert "JSON" in not_json.json()["error"]["message"]


def test_models_and_readiness(base_url: str) -> None:
    with httpx2.Client(base_url=base_url) as http:
        models = http.get("/v1/models").json()
        ready = http.get("/readyz")
    assert [m["id"] for m in models["data"]] == [SETTINGS.local_model_name]
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


def test_a_missing_model_file_fails_the_start_up(tmp_path) -> None:
    from starlette.testclient import TestClient

    settings = Settings(_env_file=None, local_model_path=tmp_path / "none.gguf")
    with (
        pytest.raises(FileNotFoundError, match="No model file at"),
        TestClient(create_embedded_app(settings)),
    ):
        pass
