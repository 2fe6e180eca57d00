"""Real server processes (`python -m gptmini_graphql serve`) sharing Redis
and a database, and an OpenAI-compatible upstream in a thread whose
answers cost exactly their worst case (so settling frees nothing, and a
budget of k worst cases admits k calls, no more, no fewer)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from gptmini_graphql.spend.worst_case import prompt_bound
from tests.conftest import LOGIN
from tests.fake_upstream import chat_completion

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _WorstCase(BaseHTTPRequestHandler):
    """Reports the request's worst case as its usage; `hold` (an Event, when
    set on the class) keeps every request waiting until it is set."""

    received: threading.Event
    hold: threading.Event | None = None

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.set()
        if self.hold is not None:
            self.hold.wait(60)
        answer = chat_completion(
            "An answer.",
            prompt_tokens=prompt_bound(body),
            completion_tokens=int(body["max_tokens"]),
        )
        data = json.dumps(answer).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the server that asked was killed

    def log_message(self, format: str, *args: object) -> None:
        pass


class Upstream:
    def __init__(self, hold: bool = False) -> None:
        self.received = threading.Event()
        self.release = threading.Event()
        attributes = {"received": self.received, "hold": self.release if hold else None}
        handler = type("Handler", (_WorstCase,), attributes)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Replica:
    """One `serve` process; stopped by `stop` (SIGINT: a clean shutdown that
    writes the ledger) or `kill` (SIGKILL: a crash)."""

    def __init__(self, env: dict[str, str], cwd: Path, name: str) -> None:
        self.port = free_port()
        self.log = cwd / f"{name}.log"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gptmini_graphql",
                "serve",
                "--port",
                str(self.port),
            ],
            cwd=cwd,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "LLM_BACKEND": "openai",
                "OPENAI_API_KEY": "sk-test",
                "CACHE_TTL_SECONDS": "0",
                "RATE_LIMIT": "100000/minute",
                "LLM_MAX_RETRIES": "0",
                "AUTH_CACHE_TTL_SECONDS": "0",
                **env,
            },
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )
        self.url = f"http://127.0.0.1:{self.port}/graphql"

    def wait_started(self) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                if (
                    httpx.get(f"http://127.0.0.1:{self.port}/healthz").status_code
                    == 200
                ):
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)

    def login(self) -> str:
        variables = {"username": "test_user", "password": "1234"}
        answer = httpx.post(self.url, json={"query": LOGIN, "variables": variables})
        return answer.json()["data"]["login"]["accessToken"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(30)
        assert "Traceback" not in self.log.read_text(), self.log.read_text()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
