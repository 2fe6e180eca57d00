"""The servers under test, each a subprocess on a free 127.0.0.1 port, started
the way it is run for real and always stopped (see `bench.rig.Rig.close`)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.load import cpu_seconds, tree_cpu_seconds
from bench.workload import LOGIN_QUERY, graphql_body

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0  # seconds


class ServerFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers=None,
    timeout: float = 10,
):
    """One plain request (set-up only, never under load): (status, JSON body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body or None, headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


class Server:
    def __init__(
        self,
        name: str,
        argv: list[str],
        log: Path,
        env=None,
        cwd: Path = ROOT,
        *,
        health: str = "/healthz",
        start_timeout: float = START_TIMEOUT,
        with_children: bool = False,
    ) -> None:
        self.name, self.log, self.port = name, log, free_port()
        self.health, self.start_timeout = health, start_timeout
        # Count the CPU of its child processes too (a server whose workers
        # are children); never for ours, whose child is the embedded model.
        self.with_children = with_children
        # Credentials of our API servers, once logged in (Rig.api).
        self.token = self.api_key = ""
        argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        with log.open("wb") as out:
            # Output (our server's JSON log lines) goes to a file: the cost of
            # writing it is part of what we measure.
            self.process = subprocess.Popen(  # noqa: S603 (our own argv, no shell)
                argv,
                cwd=cwd,
                # A None value removes the variable.
                env={
                    name: value
                    for name, value in {**os.environ, **(env or {})}.items()
                    if value is not None
                },
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu_seconds(self) -> float:
        if self.with_children:
            return tree_cpu_seconds(self.process.pid)
        return cpu_seconds(self.process.pid)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    self._failure(f"exited with {self.process.returncode}")
                )
            try:
                if http_json(self.port, "GET", self.health)[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise ServerFailed(self._failure(f"not healthy after {self.start_timeout:g} s"))

    def _failure(self, what: str) -> str:
        self.stop()
        tail = self.log.read_text(errors="replace").splitlines()[-30:]
        return f"{self.name} server {what}; last lines of {self.log}:\n" + "\n".join(
            tail
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn's graceful stop
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


API_ARGV = [sys.executable, "-m", "gptmini_graphql", "serve", "--port", "{port}"]


def uvicorn_argv(app: str) -> list[str]:
    # The same HTTP stack our server gets from uvicorn[standard]: httptools,
    # and uvloop when it is installed ("auto").
    return [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
        "--port", "{port}", "--http", "httptools", "--loop", "auto",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


def create_api_key(port: int, token: str) -> str:
    body = graphql_body('mutation { createApiKey(name: "bench") { key } }', {})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    status, answer = http_json(port, "POST", "/graphql", body, headers)
    if status != 200 or answer.get("errors"):
        raise ServerFailed(f"createApiKey failed: {status} {answer}")
    return answer["data"]["createApiKey"]["key"]


def login(port: int) -> str:
    body = graphql_body(LOGIN_QUERY, {"username": "test_user", "password": "1234"})
    status, answer = http_json(
        port, "POST", "/graphql", body, {"Content-Type": "application/json"}
    )
    if status != 200 or answer.get("errors"):
        raise ServerFailed(f"login failed: {status} {answer}")
    return answer["data"]["login"]["accessToken"]
