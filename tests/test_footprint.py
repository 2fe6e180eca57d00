"""What an API process loads at start: what serving needs, and not what only
migrations, the embedded model or tracing need (issue 17: resident memory)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import redis_url

# The app's start and stop, as `serve` runs them, in a process of its own
# (this one has loaded everything the tests use); its modules when it stopped.
STARTED_MODULES = """
import asyncio, json, sys
from gptmini_graphql.app import create_app
async def start() -> None:
    app = create_app()
    async with app.router.lifespan_context(app):
        pass
asyncio.run(start())
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""

# The same, naming every module (not only packages).
STARTED_MODULES_IN_FULL = STARTED_MODULES.replace(
    'name.split(".")[0] for name in sys.modules', "name for name in sys.modules"
)


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_server_on_a_migrated_database_loads_only_what_serving_needs(
    database_url,
) -> None:
    env = {
        **{
            name: value
            for name, value in os.environ.items()
            if name != "REDIS_URL" and not name.startswith("OTEL_")
        },
        "DATABASE_URL": database_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    # As the deployments do: `db upgrade` first (the server would migrate too).
    upgraded = _run([sys.executable, "-m", "gptmini_graphql", "db", "upgrade"], env)
    assert upgraded.returncode == 0, upgraded.stderr
    started = _run([sys.executable, "-c", STARTED_MODULES], env)
    assert started.returncode == 0, started.stderr
    loaded = set(json.loads(started.stdout.splitlines()[-1]))
    # Alembic and Mako (11 MB resident) only where there is migrating to do;
    # the model's runtime only in its own process; OpenTelemetry only when
    # OTEL_EXPORTER_OTLP_ENDPOINT is set; pycountry's 7,900 languages never
    # (tasks/languages.py reads the 184 it needs from its data); the openai
    # SDK never (48 MB: llm/chat_client.py is the upstream's client);
    # SQLAlchemy only to migrate (19 MB: requests speak to the driver).
    never = {"alembic", "mako", "llama_cpp", "opentelemetry", "pycountry", "openai"}
    never |= {"sqlalchemy", "greenlet"}
    assert not never & loaded


@pytest.mark.skipif(redis_url() is None, reason="REDIS_URL is not set")
def test_a_server_with_redis_loads_neither_opentelemetry_metrics_nor_psutil(
    database_url,
) -> None:
    # redis-py imports OpenTelemetry's metrics SDK (and psutil) when it can,
    # for metrics of its own that we never turn on (lean_imports.py).
    env = {
        **{
            name: value
            for name, value in os.environ.items()
            if not name.startswith("OTEL_")
        },
        "DATABASE_URL": database_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    upgraded = _run([sys.executable, "-m", "gptmini_graphql", "db", "upgrade"], env)
    assert upgraded.returncode == 0, upgraded.stderr
    started = _run([sys.executable, "-c", STARTED_MODULES_IN_FULL], env)
    assert started.returncode == 0, started.stderr
    loaded = set(json.loads(started.stdout.splitlines()[-1]))
    assert "redis.asyncio" in loaded  # the client was made
    assert not {"opentelemetry.sdk.metrics", "psutil"} & loaded
