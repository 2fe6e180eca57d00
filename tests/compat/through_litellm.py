"""By hand, not in CI: the API -> the LiteLLM proxy -> llama-cpp-python's server.

LiteLLM is heavy and never a dependency of ours: install it in a virtualenv
of its own, then point LITELLM at its executable:

    python3 -m venv /tmp/litellm && /tmp/litellm/bin/pip install 'litellm[proxy]==1.108.7'
    LITELLM=/tmp/litellm/bin/litellm .venv/bin/python -m tests.compat.through_litellm

It prints one JSON line per case: what the API answered, and the status of
every call that reached the model server (LiteLLM's retries included).
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from gptmini_graphql.app import create_app
from tests.child_server import ChildServer, free_port
from tests.compat.model_server import ALIAS, ModelServer
from tests.conftest import API, make_settings

KEY = "sk-" + secrets.token_hex(16)  # LiteLLM refuses to start without one
CASES = {
    "summarize": '{ summarize(text: "The cat sat on the mat all day, watching birds.", '
    "maxWords: 8) { text model usage { promptTokens completionTokens costUsd } } }",
    "complete": '{ complete(prompt: "Name a colour.", maxTokens: 6, temperature: 0) '
    "{ text finishReason usage { promptTokens completionTokens } } }",
    "translate": '{ translate(text: "Good morning", targetLanguage: "fr", '
    'sourceLanguage: "en") { text } }',
    "translate, detecting": '{ translate(text: "Good morning, my friend", '
    'targetLanguage: "de") { text sourceLanguage } }',
    "analyze, first": '{ analyze(text: "I love this!") { sentiment score } }',
    "analyze, second": '{ analyze(text: "This is awful.") { sentiment score } }',
}
STREAM = (
    'subscription { completeStream(prompt: "Hi", maxTokens: 6) '
    "{ done model usage { promptTokens completionTokens } notice } }"
)
TOO_LONG = "The quick brown fox jumps over the lazy dog. " * 200


def start_proxy(backend: ModelServer) -> tuple[ChildServer, str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write(
            f"model_list:\n  - model_name: {ALIAS}\n    litellm_params:\n"
            f"      model: openai/{ALIAS}\n      api_base: {backend.api_url}\n"
            "      api_key: none\n"
        )
    port = free_port()
    command = [os.environ["LITELLM"], "--config", config.name]
    proxy = ChildServer(
        [*command, "--host", "127.0.0.1", "--port", str(port)],
        port=port,
        log=Path(config.name).with_suffix(".log"),
        env={"LITELLM_MASTER_KEY": KEY},
    ).start()
    proxy.wait_ready("/health/liveliness", within=300)
    return proxy, f"{proxy.url}/v1"


def report(case: str, result: dict[str, Any], backend: ModelServer, since: int) -> None:
    errors = [
        f"{e['extensions']['code']}: {e['message']}" for e in result.get("errors", [])
    ]
    line = {"case": case, "data": result.get("data"), "errors": errors}
    print(json.dumps({**line, "backend_calls": backend.chat_statuses()[since:]}))


def main() -> None:
    backend = ModelServer()
    proxy, url = start_proxy(backend)
    try:

        def api(**overrides: Any) -> TestClient:
            settings = make_settings(
                **{
                    "openai_api_key": KEY,
                    "openai_base_url": url,
                    "openai_model": ALIAS,
                    "llm_timeout_seconds": 120,
                    **overrides,
                }
            )
            return TestClient(create_app(settings))

        with api() as client:
            caller = API(client, upstream=None)  # type: ignore[arg-type]
            token = caller.login()
            print(json.dumps({"case": "readyz", "data": client.get("/readyz").json()}))
            for case, query in CASES.items():
                since = len(backend.chat_statuses())
                report(case, caller.post(query, token=token), backend, since)
            since = len(backend.chat_statuses())
            response = client.post(
                "/graphql",
                json={"query": STREAM},
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "text/event-stream",
                },
            )
            last = [
                line
                for line in response.text.splitlines()
                if line.startswith("data: {")
            ]
            report("completeStream", json.loads(last[-1][6:]), backend, since)
            since = len(backend.chat_statuses())
            query = (
                "query($t: String!) { translate(text: $t, targetLanguage: "
                '"fr", sourceLanguage: "en") { text } }'
            )
            report(
                "too long",
                caller.post(query, {"t": TOO_LONG}, token=token),
                backend,
                since,
            )
        with api(llm_structured_output="json_schema") as client:
            caller = API(client, upstream=None)  # type: ignore[arg-type]
            since = len(backend.chat_statuses())
            result = caller.post(CASES["analyze, first"], token=caller.login())
            report("analyze, json_schema pinned", result, backend, since)
        backend.kill()
        with api() as client:
            caller = API(client, upstream=None)  # type: ignore[arg-type]
            result = caller.post(CASES["complete"], token=caller.login())
            report("model server down", result, backend, len(backend.chat_statuses()))
    finally:
        proxy.stop()
        backend.stop()


if __name__ == "__main__":
    main()
