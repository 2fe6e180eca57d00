"""One engine and session factory per app, and migrations to head."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from gptmini_graphql.db.url import async_url, describe
from gptmini_graphql.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

logger = logging.getLogger("gptmini_graphql.db")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The latest migration's revision (a test holds it to Alembic's head): a
# database already there is known by one row, and a server that finds it
# so never imports Alembic, Mako and their dialects (11 MB resident).
HEAD = "0002"
RETRY_AFTER_SECONDS = 5
# Each SQLite connection's page cache (SQLite's default: 2000 KiB). The pool
# keeps up to 5 connections, each of whose caches filled as the ledger grew:
# +4 MB resident after 6,000 requests, and growing. The pages read again come
# from the OS's file cache; no CPU per request was seen to change.
SQLITE_CACHE_KIB = 512
# What an unreachable, restarting or locked database raises (not a bug of ours):
# asyncpg's refusals (a database not accepting connections) arrive as plain
# DBAPIError, our own mistakes as its subclasses.
OUTAGES = (OperationalError, InterfaceError, OSError, TimeoutError)
OUR_MISTAKES = (IntegrityError, ProgrammingError, DataError)


def _is_outage(error: BaseException) -> bool:
    if isinstance(error, OUTAGES):
        return True
    return isinstance(error, DBAPIError) and not isinstance(error, OUR_MISTAKES)


class Database:
    def __init__(self, database_url: str | None) -> None:
        self.url = async_url(database_url)
        options: dict[str, object] = {}
        if self.url.get_backend_name() == "sqlite":
            path = self.url.database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Writers wait for each other instead of failing "database is locked".
            options["connect_args"] = {"timeout": 15}
        else:
            options["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        if self.url.get_backend_name() == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # An in-memory SQLite database is one connection that every session
        # shares: two transactions at once on it hang. Take turns instead.
        self._one_at_a_time = asyncio.Lock() if self._in_memory else None

    @property
    def _in_memory(self) -> bool:
        return self.url.get_backend_name() == "sqlite" and self.url.database in (
            None,
            "",
            ":memory:",
        )

    @property
    def description(self) -> str:
        return describe(self.url)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A transaction: committed if the block succeeds, rolled back if not.
        An outage is DATABASE_UNAVAILABLE, with its details in the log only."""
        try:
            async with (
                self._one_at_a_time or contextlib.nullcontext(),
                self.sessions() as session,
                session.begin(),
            ):
                yield session
        except (DBAPIError, *OUTAGES) as exc:
            if not _is_outage(exc):
                raise
            logger.warning("database unavailable", exc_info=True)
            raise DatabaseUnavailable(
                "The user database is unavailable; try again shortly.",
                retry_after=RETRY_AFTER_SECONDS,
            ) from exc

    async def migrate(self) -> None:
        """Every migration up to head, in one transaction. Processes starting
        together (uvicorn workers, replicas) take turns: PostgreSQL under an
        advisory lock (env.py), a SQLite file under a lock file beside it."""
        if await self.is_migrated():
            return  # the usual start: nothing to do, and no Alembic loaded
        async with self._sqlite_file_lock(), self.engine.begin() as connection:
            await connection.run_sync(_upgrade)

    @asynccontextmanager
    async def _sqlite_file_lock(self) -> AsyncIterator[None]:
        path = self.url.database
        if self.url.get_backend_name() != "sqlite" or self._in_memory or not path:
            yield
            return
        lock = await asyncio.to_thread(_locked, Path(f"{path}.migrate-lock"))
        try:
            yield
        finally:
            lock.close()  # and with it the lock

    async def is_migrated(self) -> bool:
        """Whether the database is at the latest migration (nothing to do)."""
        async with self.engine.connect() as connection:
            return await connection.run_sync(_at_head)

    async def aclose(self) -> None:
        await self.engine.dispose()


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config  # only to migrate: see HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _locked(path: Path) -> BinaryIO:
    lock = path.open("a+b")
    fcntl.flock(lock, fcntl.LOCK_EX)  # waits for whoever holds it
    return lock


def _at_head(connection: Connection) -> bool:
    """Alembic's version table names HEAD alone (what Alembic itself reads)."""
    if not inspect(connection).has_table("alembic_version"):
        return False
    current = connection.execute(text("SELECT version_num FROM alembic_version"))
    return set(current.scalars()) == {HEAD}


def _upgrade(connection: Connection) -> None:
    from alembic import command  # only to migrate: see HEAD

    command.upgrade(alembic_config(connection), "head")


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    # Foreign keys are off by default in SQLite; WAL lets readers run beside a writer.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
    cursor.close()
