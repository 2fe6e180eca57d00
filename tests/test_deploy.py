"""The container files, checked statically (no Docker engine here), and the
server command they run, started for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openai
import pytest
import yaml

from tests.child_server import ChildServer, free_port

ROOT = Path(__file__).parents[1]
SERVE = ["python", "-m", "gptmini_graphql", "serve"]


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    healthcheck = re.search(r"^HEALTHCHECK .*\n?.*CMD (.+)$", text, re.MULTILINE)
    assert healthcheck
    assert json.loads(healthcheck.group(1)) == [*SERVE[:3], "healthcheck"]
    cmd = re.findall(r"^CMD (.+)$", text, re.MULTILINE)[-1]
    assert json.loads(cmd) == SERVE


def test_compose_runs_the_api_with_postgres_redis_and_the_embedded_model() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) >= {"proxy", "api", "migrate", "postgres", "redis", "llm"}
    api, llm, postgres = services["api"], services["llm"], services["postgres"]
    assert api["command"] == SERVE
    assert api["environment"]["REDIS_URL"].startswith("redis://redis:")
    # The api's database is the postgres service's, which keeps it in a volume.
    database = api["environment"]["DATABASE_URL"]
    assert database.startswith("postgresql://") and "@postgres:5432/" in database
    (volume,) = postgres["volumes"]
    assert volume.split(":")[0] in compose["volumes"]
    assert volume.endswith(":/var/lib/postgresql/data")
    # The api reaches the llm service on the port that service serves.
    port = llm["command"][llm["command"].index("--port") + 1]
    assert llm["command"][:4] == ["python", "-m", "gptmini_graphql", "llm"]
    assert api["environment"]["LOCAL_MODEL_URL"] == f"http://llm:{port}"
    assert llm["healthcheck"]["test"][-3:] == ["--port", port, "--ready"]


def test_compose_migrates_once_before_any_api_replica_starts() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))[
        "services"
    ]
    api, migrate = services["api"], services["migrate"]
    assert migrate["command"] == [*SERVE[:3], "db", "upgrade"]
    assert migrate["environment"]["DATABASE_URL"] == api["environment"]["DATABASE_URL"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["environment"]["DATABASE_MIGRATE_ON_START"] == "false"
    assert api["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully"
    )
    assert {"redis", "llm"} <= set(api["depends_on"])
    assert api["deploy"]["replicas"] == "${API_REPLICAS:-3}"
    # Replicas publish nothing (they could not share a host port): the proxy does.
    assert "ports" not in api


def test_compose_probes_every_service_on_the_port_it_serves() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text("utf-8"))[
        "services"
    ]
    for name, service in services.items():
        if name != "migrate":  # a one-off step, not a service
            assert service["healthcheck"]["test"][0] == "CMD", name
    # The api listens on, and probes, PORT (the healthcheck reads the same
    # setting); the proxy forwards to that same port.
    api, proxy = services["api"], services["proxy"]
    assert api["healthcheck"]["test"][1:] == [*SERVE[:3], "healthcheck"]
    assert api["environment"]["PORT"] == proxy["environment"]["API_PORT"]
    config = (ROOT / "deploy" / "compose" / "haproxy.cfg").read_text("utf-8")
    assert 'api:"${API_PORT}"' in config
    (published,) = proxy["ports"]
    assert published.startswith("${API_BIND:-127.0.0.1}:")
    assert f"bind :{published.rsplit(':', 1)[1]}" in config
    # The proxy's own probe asks its monitor port.
    monitor = re.search(r"bind :(\d+)\n\s+monitor-uri (\S+)", config)
    assert monitor
    assert proxy["healthcheck"]["test"][-1] == (
        f"http://127.0.0.1:{monitor.group(1)}{monitor.group(2)}"
    )


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="no haproxy binary")
def test_the_proxy_config_is_valid_haproxy() -> None:
    config = ROOT / "deploy" / "compose" / "haproxy.cfg"
    checked = subprocess.run(
        ["haproxy", "-c", "-f", str(config)],
        env={**os.environ, "API_PORT": "8000"},
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_makefile_run_uses_the_same_command() -> None:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    run = re.search(r"^run:.*\n\t(.+)$", text, re.MULTILINE)
    assert run and run.group(1).split()[1:] == SERVE[1:]
    for target in (
        "up",
        "upd",
        "down",
        "stop",
        "build",
        "rm",
        "pull",
        "test",
        "lint",
        "bash",
        "install",
        "run",
        "schema",
        "bench",
    ):
        assert re.search(rf"^{target}:", text, re.MULTILINE), target


MODEL_FILE = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@contextmanager
def _running(command: list[str], port: int, cwd: Path) -> Iterator[ChildServer]:
    """The command as a server, once its /readyz says so (the model has
    loaded: /healthz answers before that). A failure shows its stderr."""
    env = {
        "PORT": str(port),
        "OPENAI_API_KEY": "",
        "OPENAI_BASE_URL": "",
        "LLM_BACKEND": "auto",
        "LOCAL_MODEL_PATH": str(MODEL_FILE),
        # Its own database, as on a fresh machine.
        "DATABASE_URL": f"sqlite:///{cwd}/users.sqlite3",
        "REDIS_URL": "",
    }
    server = ChildServer(
        [sys.executable, *command[1:]],
        port=port,
        log=cwd / "server.log",
        env=env,
        cwd=cwd,
    )
    with server:
        server.wait_ready("/readyz", within=60)
        yield server


def _post(url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers=headers
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def test_the_serve_command_answers_with_the_embedded_model(tmp_path: Path) -> None:
    """What `make run` does on a fresh machine: no key, the embedded model."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/graphql"
    with _running(SERVE, port, cwd=tmp_path) as server:  # no .env in tmp_path
        login = 'mutation { login(username: "test_user", password: "1234") { accessToken } }'
        token = _post(url, {"query": login})["data"]["login"]["accessToken"]
        query = '{ analyze(text: "What a lovely day!") { sentiment model usage { costUsd } } }'
        analysis = _post(url, {"query": query}, token)["data"]["analyze"]
    assert analysis["sentiment"] in {"POSITIVE", "NEGATIVE", "NEUTRAL", "MIXED"}
    assert analysis["model"] == "smollm2-135m-instruct"
    assert analysis["usage"]["costUsd"] == 0
    log = server.output().splitlines()
    messages = [json.loads(line)["message"] for line in log if line.startswith("{")]
    assert "started" in messages and "stopped" in messages


def test_the_llm_serve_command_is_an_openai_compatible_server(tmp_path: Path) -> None:
    """What the compose file's `llm` service runs, asked by the openai SDK."""
    port = free_port()
    command = ["python", "-m", "gptmini_graphql", "llm", "serve", "--port", str(port)]
    with _running(command, port, cwd=tmp_path):
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        answer = client.chat.completions.create(
            model="any",
            messages=[{"role": "user", "content": "Say hello."}],
            max_tokens=8,
        )
    assert answer.model == "smollm2-135m-instruct"
    assert answer.choices[0].message.content
    assert answer.usage.completion_tokens > 0
