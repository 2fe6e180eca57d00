"""The rig: every server a bench run needs, each started on first use, once,
and all stopped by `close` (clients before the upstream they call)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from bench.databases import drop, fresh_database
from bench.servers import (
    API_ARGV,
    ROOT,
    Server,
    create_api_key,
    login,
    uvicorn_argv,
)
from bench.workload import LOCAL_CONTEXT_SIZE, LOCAL_MODEL_PATH, baseline_templates

# Budgets far above what a bench spends, so that every model call reserves
# and settles against four of them, as a server with budgets does; bounded
# as the settings are (2^31 - 1 tokens a period).
BUDGETS = {
    "BUDGET_USD_PER_DAY": "1000000",
    "BUDGET_USD_PER_MONTH": "1000000",
    "BUDGET_TOKENS_PER_MONTH": "2000000000",
    "TOKEN_RATE_LIMIT": "2000000000",
}


class Rig:
    def __init__(self, log_dir: Path, before_ref: str | None = None) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self._servers: dict[str, Server] = {}
        self._cwd = tempfile.TemporaryDirectory(prefix="bench-cwd-")
        self._database: str | None = None  # our API servers' one, made once
        self._dropped_at_close: list[str] = []  # every database made here
        # A git ref whose server is measured beside ours (`--before`).
        self.before_ref = before_ref
        self.before_token = ""

    def start(self, name: str, argv: list[str], **kwargs) -> Server:
        """A server of this name, started unless it runs (Server's arguments)."""
        if name not in self._servers:
            log = self.log_dir / f"{name}.log"
            self._servers[name] = Server(name, argv, log, **kwargs)
        return self._servers[name]

    def upstream(self, delay_ms: int = 0) -> Server:
        """The fake OpenAI-compatible upstream; with a delay, another one
        that answers each chat completion that much later."""
        argv = [*uvicorn_argv("bench.fake_upstream:app"), "--lifespan", "off"]
        if not delay_ms:
            return self.start("upstream", argv)
        env = {"BENCH_UPSTREAM_DELAY_MS": str(delay_ms)}
        return self.start(f"upstream-{delay_ms}ms", argv, env=env)

    def baseline(self, name: str = "baseline") -> Server:
        """Bare Starlette + the openai SDK (bench/baseline_app.py)."""
        env = {
            "BENCH_UPSTREAM_URL": self.upstream().url + "/v1",
            "BENCH_CHAT_TEMPLATES": baseline_templates(),
        }
        return self.start(name, uvicorn_argv("bench.baseline_app:app"), env=env)

    @property
    def token(self) -> str:
        return self.api().token

    @property
    def api_key(self) -> str:
        return self.api().api_key

    def api(self, name: str = "api", upstream: Server | None = None) -> Server:
        """Our server as it runs for real: callers authenticated and rate
        limited, budgets (so each model call reserves and settles), the
        ledger in a database (a fresh PostgreSQL one when DATABASE_URL names
        a server), Redis when REDIS_URL is set; logged in, with an API key."""
        if name in self._servers:
            return self._servers[name]
        if self._database is None:
            self._database = fresh_database(self.cwd, "api")
            self._dropped_at_close.append(self._database)
            self._migrate(self.api_env({"DATABASE_URL": self._database}), self.cwd)
        upstream = upstream or self.upstream()
        env = {
            "OPENAI_BASE_URL": upstream.url + "/v1",
            "OPENAI_API_KEY": "bench",
            "DATABASE_URL": self._database,
            **BUDGETS,
        }
        server = self.start(name, API_ARGV, env=self.api_env(env), cwd=self.cwd)
        server.token = login(server.port)
        server.api_key = create_api_key(server.port, server.token)
        return server

    def _migrate(self, env: dict[str, str | None], cwd: Path) -> None:
        """`db upgrade` of the server that `env` and `cwd` start, in a
        process of its own, as the deployments migrate (deploy/: a Job, a
        container) before any API starts: a server that migrates keeps
        Alembic loaded (11 MB), and one that does not is what runs for real."""
        subprocess.run(
            [sys.executable, "-m", "gptmini_graphql", "db", "upgrade"],
            cwd=cwd,
            env={k: v for k, v in {**os.environ, **env}.items() if v is not None},
            capture_output=True,
            check=True,
        )

    def before(self, name: str = "before", upstream: Server | None = None) -> Server:
        """The server as it was at `before_ref` (git archive), same upstream
        (or `upstream`), same settings and the same kind of database as ours
        (a fresh one: that commit's schema), logged in: "before" figures from
        the same run. Another `name`, another server (on the same source)."""
        assert self.before_ref is not None
        if name in self._servers:
            return self._servers[name]
        source = Path(self._cwd.name) / "before-src"
        if not source.exists():
            self._extract_before(source)
        cwd = Path(self._cwd.name) / f"{name}-cwd"
        cwd.mkdir()
        database = fresh_database(cwd, name)
        self._dropped_at_close.append(database)
        env = self.api_env(
            {
                "DATABASE_URL": database,
                "OPENAI_BASE_URL": (upstream or self.upstream()).url + "/v1",
                "OPENAI_API_KEY": "bench",
                "PYTHONPATH": str(source),
                **BUDGETS,
            }
        )
        self._migrate(env, cwd)  # as ours is: its memory is compared
        server = self.start(name, API_ARGV, env=env, cwd=cwd)
        server.token = self.before_token = login(server.port)
        return server

    def _extract_before(self, source: Path) -> None:
        assert self.before_ref is not None
        source.mkdir()
        archive = subprocess.run(  # noqa: S603 - git, on our own repository
            ["git", "-C", str(ROOT), "archive", self.before_ref],  # noqa: S607
            capture_output=True,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(source, filter="data")

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
            # A slow generation is what is measured, not a failure: on a busy
            # two-core machine, two threads took over 30 s (the default) for
            # 128 tokens. bench/embedded.py's GENERATION_TIMEOUT waits longer.
            "LLM_TIMEOUT_SECONDS": "150",
        }
        name = f"embedded-t{threads}"
        self.stop(name)
        return self.start(name, API_ARGV, env=self.api_env(env), cwd=self.cwd)

    def stop(self, name: str) -> None:
        """Stop one server now (a later call of its method starts a new one)."""
        if server := self._servers.pop(name, None):
            server.stop()

    @property
    def cwd(self) -> Path:
        # Run from an empty folder so a developer's .env can't change what is
        # measured (REDIS_URL, say); the package is found by path.
        return Path(self._cwd.name)

    def api_env(self, env: dict[str, str | None]) -> dict[str, str | None]:
        """Our server's environment: limits every request passes, and `env`."""
        return {
            "RATE_LIMIT": "1000000/minute",
            "LOGIN_RATE_LIMIT": "1000000/minute",
            # The login scenario fails on purpose, thousands of times.
            "LOGIN_USERNAME_FAILURE_LIMIT": "1000000/hour",
            "LOG_LEVEL": "INFO",
            # Each server its own SQLite file in its folder unless `env`
            # names a database: a DATABASE_URL in the environment (for the
            # spend proof) must not be shared.
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
        for database in self._dropped_at_close:
            drop(database)
        self._cwd.cleanup()
