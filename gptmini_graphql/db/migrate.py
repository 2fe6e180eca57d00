"""Migrations to head with Alembic, over SQLAlchemy: loaded only when a
database is behind (the `db upgrade` command, or a server's first start).

Processes starting together (uvicorn workers, replicas) take turns:
PostgreSQL under an advisory lock (migrations/env.py), a SQLite file under a
lock file beside it.
"""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import BinaryIO

from alembic import command
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from gptmini_graphql.db.database import alembic_config


async def upgrade(url: str) -> None:
    """Every migration up to head, in one transaction, on the database of
    `url` (SQLAlchemy's form: db/url.py)."""
    # One connection, once: nothing to pool.
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        sqlite_path = engine.url.database if engine.dialect.name == "sqlite" else None
        async with _file_lock(sqlite_path), engine.begin() as connection:
            await connection.run_sync(_upgrade)
    finally:
        await engine.dispose()


@asynccontextmanager
async def _file_lock(sqlite_path: str | None) -> AsyncIterator[None]:
    if not sqlite_path or sqlite_path.startswith("file:"):
        yield  # PostgreSQL (its advisory lock), or SQLite in memory
        return
    lock = await asyncio.to_thread(_locked, Path(f"{sqlite_path}.migrate-lock"))
    try:
        yield
    finally:
        lock.close()  # and with it the lock


def _locked(path: Path) -> BinaryIO:
    lock = path.open("a+b")
    fcntl.flock(lock, fcntl.LOCK_EX)  # waits for whoever holds it
    return lock


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")
