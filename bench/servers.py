"""The servers under test, each a subprocess on a free 127.0.0.1 port, started
the way it is run for real and always stopped (see `Rig.close`)."""

from __future__ import annotations

import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.load import cpu_seconds
from bench.workload import (
    LOCAL_CONTEXT_SIZE,
    LOCAL_MODEL_PATH,
    LOGIN_QUERY,
    graphql_body,
)

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
            time.sleep(0.02)
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


API_ARGV = [sys.executable, "-m", "gptmini_graphql", "serve", "--port", "{port}"]


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

    def __init__(self, log_dir: Path, before_ref: str | None = None) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._servers: dict[str, Server] = {}
        self._cwd = tempfile.TemporaryDirectory(prefix="bench-cwd-")
        self.token = ""
        self.api_key = ""
        # A git ref whose server is measured beside ours (`--before`).
        self.before_ref = before_ref
        self.before_token = ""

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
        }
        server = self._start("api", API_ARGV, env=self._api_env(env), cwd=self.cwd)
        self.token = login(server.port)
        self.api_key = create_api_key(server.port, self.token)
        return server

    def before(self) -> Server:
        """The server as it was at `before_ref` (git archive), same upstream,
        same settings, logged in: "before" figures from the same run."""
        assert self.before_ref is not None
        if "before" in self._servers:
            return self._servers["before"]
        source = Path(self._cwd.name) / "before-src"
        source.mkdir()
        archive = subprocess.run(  # noqa: S603 - git, on our own repository
            ["git", "-C", str(ROOT), "archive", self.before_ref],  # noqa: S607
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(source, filter="data")
        cwd = Path(self._cwd.name) / "before-cwd"
        cwd.mkdir()
        env = self._api_env(
            {
                "OPENAI_BASE_URL": self.upstream().url + "/v1",
                "OPENAI_API_KEY": "bench",
                "PYTHONPATH": str(source),
            }
        )
        server = self._start("before", API_ARGV, env=env, cwd=cwd)
        self.before_token = login(server.port)
        return server

    def embedded(self, threads: int) -> Server:
        """Our server with no upstream configured, so the embedded model answers;
        a new one on each call (the caller times its start), not logged in.
        Returns once /healthz answers: the model may still be loading."""
        env = {
            "OPENAI_BASE_URL": None,
            "OPENAI_API_KEY": None,
            "LLM_BACKEND": None,
            "LOCAL_MODEL_PATH": str(LOCAL_MODEL_PATH),
            "LOCAL_THREADS": str(threads),
            "LOCAL_CONTEXT_SIZE": str(LOCAL_CONTEXT_SIZE),
            # Every repetition must generate: the same prompt would be a hit.
            "CACHE_TTL_SECONDS": "0",
        }
        name = f"embedded-t{threads}"
        self.stop(name)
        return self._start(name, API_ARGV, env=self._api_env(env), cwd=self.cwd)

    def stop(self, name: str) -> None:
        """Stop one server now (a later call of its method starts a new one)."""
        if server := self._servers.pop(name, None):
            server.stop()

    @property
    def cwd(self) -> Path:
        # Run from an empty folder so a developer's .env can't change what is
        # measured (REDIS_URL, say); the package is found by path.
        return Path(self._cwd.name)

    def _api_env(self, env: dict[str, str | None]) -> dict[str, str | None]:
        return {
            "RATE_LIMIT": "1000000/minute",
            "LOGIN_RATE_LIMIT": "1000000/minute",
            # The login scenario fails on purpose, thousands of times.
            "LOGIN_USERNAME_FAILURE_LIMIT": "1000000/hour",
            "LOG_LEVEL": "INFO",
            # Each server its own SQLite file in its folder: a DATABASE_URL
            # in the environment (for the spend proof) must not be shared.
            "DATABASE_URL": None,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
            ),
            **env,
        }

    def close(self) -> None:
        # Clients before the upstream they call, so none logs a broken call.
        for server in reversed(self._servers.values()):
            server.stop()
        self._cwd.cleanup()


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
