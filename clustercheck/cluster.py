"""The cluster under check: one LLM process, a database migrated once, then N
API replicas sharing Redis and that database, each a subprocess on a free
127.0.0.1 port with its log in a file. `Cluster.close` stops every process
`start` started and drops the database; `start` does so itself if it fails.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bench.servers import ROOT, Server, uvicorn_argv


@dataclass(frozen=True)
class Options:
    replicas: int = 3
    # How long a replica may act on a cached user, session or key: the bound a
    # revocation elsewhere must meet. Small, so the check waits little.
    auth_cache_ttl_seconds: float = 2.0
    rate_limit: int = 30  # requests the limited user may make (per hour)
    # The budgeted user's tokens per day: room for a few worst-case calls.
    budget_tokens: int = 2000
    load_requests: int = 300  # in the kill-a-replica phase
    concurrency: int = 12


@dataclass
class Cluster:
    options: Options
    redis_url: str
    database_url: str  # the fresh database of this run
    log_dir: Path
    admin_password: str
    replicas: list[Server] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    _stack: ExitStack = field(default_factory=ExitStack)

    @property
    def urls(self) -> list[str]:
        return [replica.url for replica in self.replicas]

    def kill(self, index: int) -> None:
        """SIGKILL: no drain, no flush, no goodbye to Redis or the database."""
        self.replicas[index].process.kill()
        self.replicas[index].process.wait()
        self.killed.add(index)

    def resident_mb(self) -> dict[str, float]:
        """Each live replica's resident memory (VmRSS, MiB), from /proc."""
        sizes = {}
        for index, replica in enumerate(self.replicas):
            if index not in self.killed:
                status = Path(f"/proc/{replica.process.pid}/status").read_text()
                kib = next(
                    line.split()[1] for line in status.splitlines()
                    if line.startswith("VmRSS:")
                )  # fmt: skip
                sizes[replica.name] = round(int(kib) / 1024, 1)
        return sizes

    def close(self) -> None:
        self._stack.close()


def start(options: Options, redis_url: str, server_url: str, log_dir: Path) -> Cluster:
    """`server_url`: the PostgreSQL server (DATABASE_URL) the run's database
    is created on."""
    stack = ExitStack()
    try:
        database_url = _create_database(server_url)
        stack.callback(_drop_database, server_url, database_url)
        cluster = Cluster(
            options,
            redis_url,
            database_url,
            log_dir,
            admin_password=secrets.token_urlsafe(16),
            _stack=stack,
        )
        env = _api_env(cluster, _start_llm(cluster, stack))
        # Migrations once, before any replica serves (as compose's and
        # Kubernetes' migration steps do); the replicas then only check.
        subprocess.run(
            [sys.executable, "-m", "gptmini_graphql", "db", "upgrade"],
            cwd=log_dir,
            env=_environment(env),
            check=True,
            capture_output=True,
        )
        for index in range(options.replicas):
            replica = Server(
                f"api{index}",
                [sys.executable, "-m", "gptmini_graphql", "serve", "--port", "{port}"],
                log_dir / f"api{index}.log",
                env=env,
                cwd=log_dir,
            )
            stack.callback(replica.stop)
            cluster.replicas.append(replica)
        return cluster
    except BaseException:
        stack.close()
        raise


def _environment(changes: dict[str, str | None]) -> dict[str, str]:
    """This process's environment with `changes`; None removes a variable."""
    merged = {**os.environ, **changes}
    return {name: value for name, value in merged.items() if value is not None}


def _start_llm(cluster: Cluster, stack: ExitStack) -> dict[str, str]:
    """The LLM process, bench/fake_upstream.py: an OpenAI-compatible server
    with one canned answer and no delay. (The embedded model generates one
    answer at a time, seconds each: the checks would measure it, not the
    replicas.) Returns the API settings that point at it."""
    llm = Server(
        "llm",
        uvicorn_argv("bench.fake_upstream:app"),
        cluster.log_dir / "llm.log",
        env={"PYTHONPATH": _python_path()},
        cwd=cluster.log_dir,
    )
    stack.callback(llm.stop)
    return {
        "OPENAI_BASE_URL": f"{llm.url}/v1",
        "OPENAI_API_KEY": "sk-cluster-check",
        "LLM_BACKEND": "openai",
    }


def _python_path() -> str:
    return os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _api_env(cluster: Cluster, llm: dict[str, str]) -> dict[str, str | None]:
    """What every replica shares: the stores, the secrets, the limits. They
    run in the log directory: no developer's .env changes what is checked."""
    return {
        "PYTHONPATH": _python_path(),
        "REDIS_URL": cluster.redis_url,
        "DATABASE_URL": cluster.database_url,
        "DATABASE_MIGRATE_ON_START": "false",
        # Replicas must share the signing secret: a token from one is
        # verified by another.
        "JWT_SECRET": secrets.token_urlsafe(32),
        "FAKE_USERNAME": "cluster-admin",
        "FAKE_PASSWORD": cluster.admin_password,
        "AUTH_CACHE_TTL_SECONDS": str(cluster.options.auth_cache_ttl_seconds),
        # Generous defaults: the limit under check is one user's own.
        "RATE_LIMIT": "100000/minute",
        "LOGIN_RATE_LIMIT": "100000/minute",
        "LOCAL_MODEL_URL": None,
        "OPENAI_API_KEY": None,
        "OPENAI_BASE_URL": None,
        "PORT": None,
        "WEB_CONCURRENCY": None,
        "PROMETHEUS_MULTIPROC_DIR": None,
        **llm,
    }


def _create_database(server_url: str) -> str:
    from sqlalchemy.engine import make_url

    name = f"gm_cluster_{uuid.uuid4().hex[:12]}"
    _execute(server_url, f'CREATE DATABASE "{name}"')
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(server_url: str, database_url: str) -> None:
    from sqlalchemy.engine import make_url

    name = make_url(database_url).database
    _execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _execute(server_url: str, statement: str) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    # asyncpg takes a plain postgresql:// URL, without a +driver.
    url = make_url(server_url).set(drivername="postgresql")

    async def run() -> None:
        connection = await asyncpg.connect(url.render_as_string(hide_password=False))
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run())
