"""Running the sets: the embedded model's server in a child process, our API
in front of it (in process, over HTTP as a client sees it), and the naive
baseline: the same server asked directly with one plain prompt."""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from gptmini_graphql.app import create_app
from gptmini_graphql.settings import Settings
from gptmini_graphql.tasks.languages import BY_CODE
from tests.child_server import ChildServer, free_port

TIMEOUT = 300  # seconds: a long summary on one busy core


@dataclass
class Answer:
    """One answer (or its failure) and how long it took."""

    seconds: float
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@contextmanager
def model_server(model_path: Path, model_name: str, threads: int) -> Iterator[str]:
    """`llm serve` on a free port; yields its base URL once the model is loaded."""
    port = free_port()
    env = {
        "LOCAL_MODEL_PATH": str(model_path),
        "LOCAL_MODEL_NAME": model_name,
        "LOCAL_THREADS": str(threads),
        "LOG_LEVEL": "WARNING",
    }
    command = [sys.executable, "-m", "gptmini_graphql", "llm", "serve"]
    with tempfile.TemporaryDirectory() as logs:
        server = ChildServer(
            [*command, "--host", "127.0.0.1", "--port", str(port)],
            port=port,
            log=Path(logs) / "model-server.log",
            env=env,
        )
        with server:
            server.wait_ready("/readyz", within=120)
            yield server.url


class OurAPI:
    """The GraphQL API, as a client calls it, backed by the model server."""

    def __init__(self, model_url: str, model_name: str) -> None:
        settings = Settings(
            _env_file=None,
            llm_backend="local",
            local_model_url=model_url,
            local_model_name=model_name,
            openai_api_key=None,
            openai_base_url=None,
            cache_ttl_seconds=0,
            llm_timeout_seconds=TIMEOUT,
            rate_limit="100000/minute",
            # A full run takes longer than the default 15 minutes' token.
            jwt_ttl_seconds=24 * 3600,
            log_level="WARNING",
            # Answer quality needs no one's users or counters: a database and
            # limits of its own, whatever DATABASE_URL and REDIS_URL say.
            database_url="sqlite://",
            redis_url=None,
        )
        self._client = TestClient(create_app(settings))

    def __enter__(self) -> OurAPI:
        self._client.__enter__()
        token = self.query(
            'mutation { login(username: "test_user", password: "1234") { accessToken } }'
        ).data["login"]["accessToken"]
        self._client.headers["Authorization"] = f"Bearer {token}"
        return self

    def __exit__(self, *exc: object) -> None:
        self._client.__exit__(*exc)

    def query(self, document: str, **variables: Any) -> Answer:
        started = time.perf_counter()
        body = self._client.post(
            "/graphql", json={"query": document, "variables": variables}
        ).json()
        seconds = time.perf_counter() - started
        if body.get("errors"):
            return Answer(seconds, error=body["errors"][0]["message"])
        return Answer(seconds, data=body["data"])

    def analyze(self, text: str) -> Answer:
        return self.query(
            "query($t: String!) { analyze(text: $t) { sentiment score confidence } }",
            t=text,
        )

    def translate(self, text: str, target: str) -> Answer:
        return self.query(
            "query($t: String!, $g: String!) { translate(text: $t, targetLanguage: $g)"
            " { text sourceLanguage usage { completionTokens } } }",
            t=text,
            g=target,
        )

    def summarize(self, text: str, max_words: int) -> Answer:
        return self.query(
            "query($t: String!, $n: Int!) { summarize(text: $t, maxWords: $n)"
            " { text usage { completionTokens } } }",
            t=text,
            n=max_words,
        )


def _enum_schema(name: str, values: list[str]) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {
            "name": name,
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {name: {"type": "string", "enum": values}},
                "required": [name],
                "additionalProperties": False,
            },
        },
    }


class NaiveBaseline:
    """The raw model with one plain instruction each, as anyone would first try."""

    def __init__(self, model_url: str) -> None:
        self._http = httpx.Client(base_url=model_url, timeout=TIMEOUT)

    def close(self) -> None:
        self._http.close()

    def _chat(self, system: str, text: str, max_tokens: int, **extra: Any) -> Answer:
        body = {
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": text},
            ],
            "max_tokens": max_tokens,
            "temperature": 0,
            **extra,
        }
        started = time.perf_counter()
        response = self._http.post("/v1/chat/completions", json=body)
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            return Answer(seconds, error=response.text[:200])
        reply = response.json()
        choice = reply["choices"][0]
        return Answer(
            seconds,
            data={
                "text": choice["message"]["content"],
                "finish_reason": choice["finish_reason"],
                "completion_tokens": reply["usage"]["completion_tokens"],
            },
        )

    def analyze(self, text: str) -> Answer:
        labels = ["positive", "negative", "neutral", "mixed"]
        return self._chat(
            "Classify the sentiment of the text.",
            text,
            32,
            response_format=_enum_schema("sentiment", labels),
        )

    def translate(self, text: str, target: str, max_tokens: int) -> Answer:
        name = BY_CODE[target].name
        return self._chat(f"Translate the text into {name}.", text, max_tokens)

    def detect(self, text: str) -> Answer:
        return self._chat(
            "Which language is the text written in? Answer with its ISO 639-1 code.",
            text,
            16,
            response_format=_enum_schema("language", sorted(BY_CODE)),
        )

    def summarize(self, text: str, max_words: int, max_tokens: int) -> Answer:
        return self._chat(
            f"Summarize the text in at most {max_words} words.", text, max_tokens
        )
