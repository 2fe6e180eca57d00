"""A fresh PostgreSQL database for a bench's servers, on the server that
DATABASE_URL names (made and dropped again); SQLite when it names none."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path


def postgres_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith("postgres") else None


def fresh_database(work: Path, name: str) -> str:
    """A new, empty PostgreSQL database named gm_bench_<name>_<time> when
    DATABASE_URL names a PostgreSQL server, else a SQLite file in `work`."""
    url = postgres_url()
    if url is None:
        return f"sqlite:///{work}/{name}.sqlite3"
    import asyncpg
    from sqlalchemy.engine import make_url

    database = f"gm_bench_{name}_{int(time.time())}"

    async def create() -> None:
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(f'CREATE DATABASE "{database}"')
        finally:
            await connection.close()

    asyncio.run(create())
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def drop(database: str) -> None:
    """A database `fresh_database` made goes again (a SQLite file stays with
    its folder)."""
    base = postgres_url()
    if not database.startswith("postgres") or base is None:
        return
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(database)

    async def run() -> None:
        connection = await asyncpg.connect(base)
        try:
            await connection.execute(
                f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'
            )
        finally:
            await connection.close()

    asyncio.run(run())
