"""The embedded model in its own process: a crash there is an outage of one
upstream, never of the API; a client that leaves frees the model; workers
share one model process.

Through the public surface: GraphQL over HTTP, /readyz, /healthz, /metrics,
signals to the model's process, and its own /readyz for how busy it is.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from gptmini_graphql.app import create_app
from tests.child_server import ChildServer, free_port
from tests.conftest import API, LOGIN, error_codes, make_settings
from tests.model_process import (
    LONG_PROMPT,
    MODEL_FILE,
    model_processes,
    the_model_process,
)

pytestmark = pytest.mark.skipif(
    not MODEL_FILE.exists(),
    reason="no model file: `make install` fetches it",
)
LOCAL = {
    "openai_api_key": None,
    "openai_base_url": None,
    "local_model_path": MODEL_FILE,
    "local_threads": 1,
}
LONG_COMPLETE = (
    f'{{ complete(prompt: "{LONG_PROMPT}", maxTokens: 1500, temperature: 0) '
    "{ text finishReason } }"
)


def wait_ready(client: Any, within: float = 60) -> list[str]:
    """Poll /readyz until 200; return the reasons it gave meanwhile."""
    reasons = []
    deadline = time.monotonic() + within
    while (response := client.get("/readyz")).status_code != 200:
        reasons.append(response.json()["reason"])
        assert time.monotonic() < deadline, f"not ready: {reasons[-1]}"
        time.sleep(0.05)
    return reasons


class InBackground(threading.Thread):
    """One GraphQL request on a thread of its own; `result` once it returns."""

    def __init__(self, api: API, query: str, token: str) -> None:
        super().__init__(daemon=True)
        self.api, self.query, self.token = api, query, token
        self.result: dict[str, Any] | None = None

    def run(self) -> None:
        self.result = self.api.post(self.query, token=self.token)


@pytest.mark.parametrize(
    "crash", [signal.SIGKILL, signal.SIGSEGV], ids=lambda s: s.name
)
def test_a_crash_fails_waiting_requests_at_once_and_the_model_comes_back(
    make_api, crash: signal.Signals, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET", "a-secret-the-model-process-never-needs-0123")
    api = make_api(**LOCAL)
    wait_ready(api.client)
    token = api.login()
    model = the_model_process()
    # Native code gets the settings it needs, and no secret.
    environment = Path(f"/proc/{model.pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environment if v.startswith(b"JWT_SECRET=")]
    assert f"LOCAL_MODEL_PATH={MODEL_FILE}".encode() in environment
    waiting = InBackground(api, LONG_COMPLETE, token)
    waiting.start()
    model.wait_in_flight(1)

    os.kill(model.pid, crash)
    waiting.join(timeout=10)  # never a hang: the connection dies with the process
    assert not waiting.is_alive()
    assert waiting.result is not None
    assert error_codes(waiting.result) == ["UPSTREAM_UNAVAILABLE"]
    assert "not answering" in waiting.result["errors"][0]["message"]

    # Everything that needs no model answers throughout.
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/metrics").status_code == 200
    assert api.login()
    reasons = wait_ready(api.client)
    assert any(crash.name in reason for reason in reasons), reasons

    restarted = the_model_process()
    assert restarted.pid != model.pid
    answer = api.post(
        '{ complete(prompt: "Say hi.", maxTokens: 4, temperature: 0) { text } }',
        token=token,
    )
    assert "errors" not in answer, answer


@pytest.fixture(params=[0, 3600], ids=["no-cache", "cache"])
def served_api(request: pytest.FixtureRequest) -> Any:
    """The API on a real socket (uvicorn in a thread): a client can hang up.
    With the response cache too: a deterministic request waits there on a
    call other requests could share."""
    app = create_app(make_settings(**LOCAL, cache_ttl_seconds=request.param))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "no server"
        time.sleep(0.01)
    with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as client:
        wait_ready(client)
        yield client
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def test_a_client_that_leaves_stops_its_generation(served_api: httpx.Client) -> None:
    login = served_api.post(
        "/graphql",
        json={
            "query": LOGIN,
            "variables": {"username": "test_user", "password": "1234"},
        },
    )
    token = login.json()["data"]["login"]["accessToken"]
    model = the_model_process()
    headers = {"Authorization": f"Bearer {token}"}

    # A plain query whose caller gives up after a second...
    with pytest.raises(httpx.ReadTimeout):
        served_api.post(
            "/graphql", json={"query": LONG_COMPLETE}, headers=headers, timeout=1
        )
    # ...frees the model within a few tokens, not at the end of 1,500.
    model.wait_in_flight(0, within=5)

    # And so does a stream whose reader hangs up after a few chunks.
    stream = (
        f'subscription {{ completeStream(prompt: "{LONG_PROMPT}", maxTokens: 1500, '
        "temperature: 0) { text } }"
    )
    with served_api.stream(
        "POST",
        "/graphql",
        json={"query": stream},
        headers={**headers, "Accept": "text/event-stream"},
    ) as response:
        for n, _ in enumerate(response.iter_lines()):
            if n == 10:
                assert model.in_flight() == 1
                break
    model.wait_in_flight(0, within=5)


def test_workers_share_one_model_process(tmp_path) -> None:
    port = free_port()
    environment = {
        "LLM_BACKEND": "local",
        "LOCAL_MODEL_PATH": str(MODEL_FILE),
        "LOCAL_THREADS": "1",
        "PORT": str(port),
        "CACHE_TTL_SECONDS": "0",
        "DATABASE_URL": f"sqlite:///{tmp_path}/users.sqlite3",
        "REDIS_URL": "",
    }
    server = ChildServer(
        [sys.executable, "-m", "gptmini_graphql", "serve", "--workers", "2"],
        port=port,
        log=tmp_path / "serve.log",
        env=environment,
        cwd=tmp_path,  # no .env of the developer's
    )
    with server, httpx.Client(base_url=server.url) as client:
        server.wait_ready("/readyz", within=60)
        assert server.process is not None
        models = model_processes(server.process.pid)
        assert len(models) == 1, models
        # Each request may land on either worker; all reach the one model.
        for _ in range(10):
            assert client.get("/readyz").json()["status"] == "ready"
        # And /metrics, from whichever worker answers, counts them all.
        series = (
            'gptmini_http_requests_total{method="GET",route="/readyz",status="200"}'
        )
        for _ in range(3):
            scraped = client.get("/metrics").text
            counted = [
                line.split()[-1]
                for line in scraped.splitlines()
                if line.startswith(series)
            ]
            assert [float(n) for n in counted] == [11.0]
    deadline = time.monotonic() + 10
    while model_processes(server.process.pid) or _alive(models[0].pid):
        assert time.monotonic() < deadline, "the model process outlived the server"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_model_process_stops_when_its_supervisor_is_gone(tmp_path) -> None:
    # A supervisor killed with SIGKILL cannot stop its child; the end of the
    # child's stdin (the pipe the supervisor held) does.
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gptmini_graphql",
            "llm",
            "serve",
            "--uds",
            str(tmp_path / "model.sock"),
            "--exit-with-stdin",
        ],
        env={**os.environ, "LOCAL_MODEL_PATH": str(MODEL_FILE)},
        stdin=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "model.sock").exists():
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert child.stdin is not None
        child.stdin.close()
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert child.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        if child.poll() is None:
            child.kill()


def test_a_missing_model_file_fails_the_start_not_a_restart_loop(tmp_path) -> None:
    from starlette.testclient import TestClient

    settings = make_settings(**{**LOCAL, "local_model_path": tmp_path / "none.gguf"})
    with (
        pytest.raises(FileNotFoundError, match="No model file at"),
        TestClient(create_app(settings)),
    ):
        pass
    assert model_processes() == []
