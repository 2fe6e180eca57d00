"""SIGTERM with a stream open: `python -m gptmini_graphql serve` for real,
against an upstream that streams for ever (or stalls), over SSE.

The stream gets a last SERVER_SHUTTING_DOWN error once SHUTDOWN_GRACE_SECONDS
have passed, and the process stops, instead of waiting for the stream's end.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.child_server import ChildServer, free_port
from tests.conftest import LOGIN
from tests.fake_upstream import chunk_event

STREAM = (
    'subscription { completeStream(prompt: "Tell me a long story.") { text done } }'
)


class _Streaming(BaseHTTPRequestHandler):
    """Chat Completions as SSE: a word every 50 ms, for far longer than any
    test (or, stalled, one word and then nothing)."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection does
    stall = False

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        delta = {"role": "assistant", "content": "word "}
        try:
            for _ in range(10_000):
                event = chunk_event(
                    [{"index": 0, "delta": delta, "finish_reason": None}]
                )
                self.wfile.write(event)
                self.wfile.flush()
                time.sleep(600 if self.stall else 0.05)
        except OSError:
            pass  # the server hung up: what a shutdown should do

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream_url(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (_Streaming,), {"stall": request.param == "stalled"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _serve(tmp_path: Path, env: dict[str, str], *argv: str) -> ChildServer:
    """`serve` with `env`, started and answering (no .env where it runs)."""
    port = free_port()
    server = ChildServer(
        [sys.executable, "-m", "gptmini_graphql", "serve", *argv],
        port=port,
        log=tmp_path / "serve.log",
        # Its own database: not the suite's DATABASE_URL, whose schema other
        # branches may have moved on.
        env={
            "PORT": str(port),
            "REDIS_URL": "",
            "DATABASE_URL": f"sqlite:///{tmp_path}/users.sqlite3",
            **env,
        },
        cwd=tmp_path,
    ).start()
    server.wait_ready("/healthz", within=30)
    return server


def _login(client: httpx.Client, server: ChildServer) -> str:
    login = {"username": "test_user", "password": "1234"}
    answer = client.post(
        f"{server.url}/graphql", json={"query": LOGIN, "variables": login}
    )
    return answer.json()["data"]["login"]["accessToken"]


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, object]]:
    event = None
    for line in lines:
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event is not None:
            data = line.removeprefix("data: ")
            yield event, json.loads(data) if data else None


@pytest.mark.parametrize(
    ("upstream_url", "workers"),
    [("steady", "1"), ("stalled", "1"), ("steady", "2")],
    indirect=["upstream_url"],
)
def test_sigterm_ends_open_streams_after_the_grace(
    tmp_path: Path, upstream_url: str, workers: str
) -> None:
    env = {
        "LLM_BACKEND": "openai",
        "OPENAI_BASE_URL": upstream_url,
        "OPENAI_API_KEY": "sk-test",
        "SHUTDOWN_GRACE_SECONDS": "1",
    }
    with _serve(tmp_path, env, "--workers", workers) as server:
        with httpx.Client(timeout=60) as client:
            token = _login(client, server)
            events = []
            with client.stream(
                "POST",
                f"{server.url}/graphql",
                json={"query": STREAM},
                headers={
                    "Authorization": f"Bearer {token}",
                    "Accept": "text/event-stream",
                },
            ) as response:
                for event in _sse_events(response.iter_lines()):
                    if not events:
                        server.send_signal(signal.SIGTERM)  # mid-stream
                    events.append(event)
                    if len(events) > 400:  # 20 s of words: it was not ended
                        break
        assert len(events) <= 400, "the stream went on long after SIGTERM"
        # uvicorn re-raises SIGTERM once it has shut down gracefully.
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    log = server.output()

    *chunks, (last_name, last), end = events
    assert end == ("complete", None)
    assert chunks and all(name == "next" for name, _ in chunks)
    assert chunks[0][1]["data"]["completeStream"]["text"] == "word "
    assert last_name == "next"
    assert last["data"] is None
    assert [e["extensions"]["code"] for e in last["errors"]] == ["SERVER_SHUTTING_DOWN"]
    messages = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert "stopped" in [m["message"] for m in messages]  # a clean lifespan end
    assert "Traceback" not in log
    stream_line = next(m for m in messages if m["message"] == "graphql subscription")
    assert stream_line["outcome"] == "SERVER_SHUTTING_DOWN"


class _Silent(BaseHTTPRequestHandler):
    """Takes the request and never answers: a plain request that is still
    waiting on the model when the server's last cut comes."""

    received = threading.Event()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.received.set()
        time.sleep(120)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_plain_request_cut_at_shutdown_gets_a_coded_503(tmp_path: Path) -> None:
    handler = type("Handler", (_Silent,), {"received": threading.Event()})
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    upstream.daemon_threads = True
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    env = {
        "LLM_BACKEND": "openai",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream.server_address[1]}/v1",
        "OPENAI_API_KEY": "sk-test",
        "SHUTDOWN_GRACE_SECONDS": "1",  # the last cut comes 5 s after
        "LLM_TIMEOUT_SECONDS": "60",  # longer than that
    }
    try:
        with _serve(tmp_path, env) as server, httpx.Client(timeout=60) as client:
            token = _login(client, server)
            threading.Timer(
                0,
                lambda: (
                    handler.received.wait(30) and server.send_signal(signal.SIGTERM)
                ),
            ).start()
            response = client.post(
                f"{server.url}/graphql",
                json={"query": '{ analyze(text: "fine") { sentiment } }'},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    errors = response.json()["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["SERVER_SHUTTING_DOWN"]
    assert "Traceback" not in server.output()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_leaves_the_servers_last_log_lines(
    tmp_path: Path, workers: str
) -> None:
    """uvicorn's last lines, which it logs just before it raises SIGTERM
    again to end the process, reach stderr (each worker's too)."""
    env = {
        "LLM_BACKEND": "openai",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # never called
        "OPENAI_API_KEY": "sk-test",
    }
    with _serve(tmp_path, env, "--workers", workers) as server:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) in (0, -signal.SIGTERM)
    log = server.output()
    messages = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    said = [m["message"] for m in messages]
    assert said.count("Application shutdown complete.") == int(workers)
    finished = [each for each in said if each.startswith("Finished server process")]
    assert len(finished) == int(workers)
