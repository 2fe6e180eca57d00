"""Bytecode for what the server imports, and for nothing else.

    python scripts/compile-what-starts.py MODEL_PATH

The image installs without bytecode (half of its Python is never imported:
most of numpy, openai's types for APIs we do not call, test suites); this
starts the server once, the way the image runs it (embedded model, SQLite),
asks it what a client would, and stops it, so Python writes a .pyc for each
module that was imported. The modules of the PostgreSQL and Redis paths,
which that start does not take, are imported by name. A module left out
still works: it is compiled in memory when a process imports it, which is
slower, never wrong. It also fails the build if the server cannot start and
answer.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_SECONDS = 180  # the model loads, on a busy builder
OTHER_PATHS = [
    "asyncpg",
    "sqlalchemy.dialects.postgresql.asyncpg",
    "redis.asyncio",
    "limits.aio.storage.redis",
    "prometheus_client.multiprocess",
]


def main() -> int:
    model = Path(sys.argv[1])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    data = tempfile.mkdtemp()
    env = {
        **os.environ,
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{data}/warm-up.sqlite3",
        "LOCAL_MODEL_PATH": str(model),
        "LOCAL_THREADS": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "gptmini_graphql", "serve"], env=env, cwd=data
    )
    try:
        _wait_ready(port, server)
        token = _graphql(
            port,
            'mutation { login(username: "test_user", password: "1234") '
            "{ accessToken } }",
        )["login"]["accessToken"]
        _graphql(port, '{ analyze(text: "What a lovely day.") { sentiment } }', token)
        _get(port, "/metrics")
        subprocess.run(
            [sys.executable, "-m", "gptmini_graphql", "healthcheck"],
            env=env,
            check=True,
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    subprocess.run(  # noqa: S603 (our own interpreter, a fixed list of modules)
        [sys.executable, "-c", "".join(f"import {name};" for name in OTHER_PATHS)],
        check=True,
    )
    return 0


def _wait_ready(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        try:
            _get(port, "/readyz")
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not become ready") from None
            time.sleep(0.5)


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        return reply.read()


def _graphql(port: int, query: str, token: str | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    with urllib.request.urlopen(request, timeout=120) as reply:  # noqa: S310
        body = json.load(reply)
    if body.get("errors"):
        raise SystemExit(f"{query}: {body['errors']}")
    return body["data"]


if __name__ == "__main__":
    sys.exit(main())
