"""The container files, checked statically (no Docker engine here), and the
server command they run, started for real."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
SERVE = ["python", "-m", "gptmini_graphql", "serve"]


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert len(re.findall(r"^FROM ", text, re.MULTILINE)) >= 2
    users = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", text, re.MULTILINE)
    cmd = re.findall(r"^CMD (.+)$", text, re.MULTILINE)[-1]
    assert json.loads(cmd) == SERVE


def test_compose_runs_the_api_with_redis() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) >= {"api", "redis"}
    assert services["api"]["command"] == SERVE
    assert services["api"]["environment"]["REDIS_URL"].startswith("redis://redis:")
    assert "redis" in services["api"]["depends_on"]


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_serve_command_answers_health_and_login(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "PORT": str(port), "OPENAI_API_KEY": "", "OPENAI_BASE_URL": ""}
    server = subprocess.Popen(
        [sys.executable, *SERVE[1:]],
        cwd=tmp_path,  # no .env there
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=1) as response:
                    assert json.load(response) == {"status": "ok"}
                    break
            except OSError:
                assert server.poll() is None, server.stderr.read()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        request = urllib.request.Request(
            f"{base}/graphql",
            data=json.dumps(
                {
                    "query": 'mutation { login(username: "test_user", password: "1234") '
                    "{ accessToken } }"
                }
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["data"]["login"]["accessToken"]
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=10)
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert "started" in messages and "stopped" in messages
