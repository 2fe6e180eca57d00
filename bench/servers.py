"""The servers under test, each a subprocess on a free 127.0.0.1 port, started
the way it is run for real and always stopped (see `Rig.close`)."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.load import cpu_seconds
from bench.workload import LOGIN_QUERY, graphql_body

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0  # seconds


class ServerFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_json(port: int, method: str, path: str, body: bytes = b"", headers=None):
    """One plain request (set-up only, never under load): (status, JSON body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body or None, headers or {})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


class Server:
    def __init__(
        self, name: str, argv: list[str], log: Path, env=None, cwd: Path = ROOT
    ) -> None:
        self.name, self.log, self.port = name, log, free_port()
        argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        with log.open("wb") as out:
            # Output (our server's JSON log lines) goes to a file: the cost of
            # writing it is part of what we measure.
            self.process = subprocess.Popen(  # noqa: S603 (our own argv, no shell)
                argv,
                cwd=cwd,
                env={**os.environ, **(env or {})},
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
        return cpu_seconds(self.process.pid)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(
                    self._failure(f"exited with {self.process.returncode}")
                )
            try:
                if http_json(self.port, "GET", "/healthz")[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise ServerFailed(self._failure(f"not healthy after {START_TIMEOUT:g} s"))

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


def uvicorn_argv(app: str) -> list[str]:
    # The same HTTP stack our server gets from uvicorn[standard]: httptools,
    # and uvloop when it is installed ("auto").
    return [
        sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1",
        "--port", "{port}", "--http", "httptools", "--loop", "auto",
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


class Rig:
    """Starts each server on first use, once; `close` stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._servers: dict[str, Server] = {}
        self._cwd = tempfile.TemporaryDirectory(prefix="bench-cwd-")
        self.token = ""

    def _start(self, name: str, argv: list[str], **kwargs) -> Server:
        if name not in self._servers:
            log = self.log_dir / f"{name}.log"
            self._servers[name] = Server(name, argv, log, **kwargs)
        return self._servers[name]

    def upstream(self) -> Server:
        argv = [*uvicorn_argv("bench.fake_upstream:app"), "--lifespan", "off"]
        return self._start("upstream", argv)

    def baseline(self) -> Server:
        env = {"BENCH_UPSTREAM_URL": self.upstream().url + "/v1"}
        return self._start("baseline", uvicorn_argv("bench.baseline_app:app"), env=env)

    def api(self) -> Server:
        """Our server, as users run it, logged in once."""
        if "api" in self._servers:
            return self._servers["api"]
        env = {
            "OPENAI_BASE_URL": self.upstream().url + "/v1",
            "OPENAI_API_KEY": "bench",
            "RATE_LIMIT": "1000000/minute",
            "LOG_LEVEL": "INFO",
            # Run from an empty folder so a developer's .env can't change what
            # is measured (REDIS_URL, say); the package is found by path.
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
            ),
        }
        argv = [sys.executable, "-m", "gptmini_graphql", "serve", "--port", "{port}"]
        server = self._start("api", argv, env=env, cwd=Path(self._cwd.name))
        self.token = login(server.port)
        return server

    def close(self) -> None:
        # Clients before the upstream they call, so none logs a broken call.
        for server in reversed(self._servers.values()):
            server.stop()
        self._cwd.cleanup()


def login(port: int) -> str:
    body = graphql_body(LOGIN_QUERY, {"username": "test_user", "password": "1234"})
    status, answer = http_json(
        port, "POST", "/graphql", body, {"Content-Type": "application/json"}
    )
    if status != 200 or answer.get("errors"):
        raise ServerFailed(f"login failed: {status} {answer}")
    return answer["data"]["login"]["accessToken"]
