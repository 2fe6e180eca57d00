"""One database per app: transactions over the driver itself (asyncpg for
PostgreSQL, aiosqlite for SQLite), and migrations to head.

Requests, the ledger and the auth stores speak SQL straight to the driver:
SQLAlchemy's ORM and Core held 19 MB of a server's ~110 MB resident, and do
a query's work in Python a second time. SQLAlchemy and Alembic own the
tables (db/models.py, migrations/) and are loaded only to migrate
(db/migrate.py). Statements are written once, with PostgreSQL's `$1`
placeholders; SQLite is handed them as `?1`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gptmini_graphql.db.url import DatabaseURL, async_url, describe
from gptmini_graphql.db.values import SQLiteValues, Values
from gptmini_graphql.errors import DatabaseUnavailable

if TYPE_CHECKING:
    import aiosqlite
    import asyncpg  # type: ignore[import-untyped]
    from alembic.config import Config

logger = logging.getLogger("gptmini_graphql.db")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# The latest migration's revision (a test holds it to Alembic's head): a
# database already there is known by one row, and a server that finds it
# so never imports SQLAlchemy, Alembic, Mako and their dialects.
HEAD = "0002"
RETRY_AFTER_SECONDS = 5
# SQLite's page cache (its default: 2000 KiB), which filled as the ledger
# grew: the pages read again come from the OS's file cache.
SQLITE_CACHE_KIB = 512
# Writers wait for each other (other processes) instead of failing "locked".
SQLITE_BUSY_SECONDS = 15
# PostgreSQL connections kept for this process (SQLAlchemy's default was
# 5 and up to 10 more at once).
POSTGRES_POOL_SIZE = 10

Row = Sequence[Any]


class Conflict(Exception):
    """The database refused a row that breaks a unique or foreign key."""


class Transaction:
    """Statements inside one transaction, on one connection."""

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        raise NotImplementedError

    async def execute(self, sql: str, *args: object) -> int:
        """The number of rows the statement changed."""
        raise NotImplementedError

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        raise NotImplementedError

    async def fetchrow(self, sql: str, *args: object) -> Row | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: object) -> Any:
        row = await self.fetchrow(sql, *args)
        return None if row is None else row[0]


class Database:
    def __init__(self, database_url: str | None) -> None:
        self.url: DatabaseURL = async_url(database_url)
        self.postgres = self.url.backend == "postgresql"
        self.values: Values = Values() if self.postgres else SQLiteValues()
        self._conflicts, self._outages, self._ours = _driver_errors(self.postgres)
        self._pool: asyncpg.Pool | None = None
        self._sqlite: aiosqlite.Connection | None = None
        # One SQLite connection, one transaction at a time: SQLite writes
        # one at a time anyway, and one connection keeps one page cache.
        self._turns = asyncio.Lock()
        if not self.postgres and not self._in_memory:
            path = self.url.database
            assert path is not None
            Path(path).parent.mkdir(parents=True, exist_ok=True)

    @property
    def _in_memory(self) -> bool:
        return not self.postgres and self.url.database in (None, ":memory:")

    @property
    def description(self) -> str:
        return describe(self.url)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Committed if the block succeeds, rolled back if not. An outage is
        DATABASE_UNAVAILABLE (details in the log only); a duplicate row,
        Conflict."""
        try:
            if self.postgres:
                async with self._postgres_transaction() as transaction:
                    yield transaction
            else:
                async with self._sqlite_transaction() as transaction:
                    yield transaction
        except self._conflicts as exc:
            raise Conflict(str(exc)) from exc
        except self._outages as exc:
            if isinstance(exc, self._ours):
                raise
            logger.warning("database unavailable", exc_info=True)
            raise DatabaseUnavailable(
                "The user database is unavailable; try again shortly.",
                retry_after=RETRY_AFTER_SECONDS,
            ) from exc

    @asynccontextmanager
    async def _postgres_transaction(self) -> AsyncIterator[Transaction]:
        pool = await self._postgres_pool()
        async with pool.acquire() as connection, connection.transaction():
            yield _PostgresTransaction(connection)

    async def _postgres_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            import asyncpg

            async with self._turns:
                if self._pool is None:
                    # min_size 0: connects at first use, as an outage allows.
                    self._pool = await asyncpg.create_pool(
                        self.url.asyncpg_dsn(), min_size=0, max_size=POSTGRES_POOL_SIZE
                    )
        return self._pool

    @asynccontextmanager
    async def _sqlite_transaction(self) -> AsyncIterator[Transaction]:
        async with self._turns:
            connection = await self._sqlite_connection()
            try:
                yield _SQLiteTransaction(connection)
                await connection.commit()
            except BaseException:
                # Also when cancelled: the driver's thread finishes the
                # statement anyway, and this is queued after it.
                await asyncio.shield(connection.rollback())
                raise

    async def _sqlite_connection(self) -> aiosqlite.Connection:
        if self._sqlite is None:
            import aiosqlite

            connection = await aiosqlite.connect(
                self._sqlite_target(),
                timeout=SQLITE_BUSY_SECONDS,
                # sqlite3 begins the transaction at its first write (as over
                # SQLAlchemy): reads before it take no snapshot, so a write
                # after them waits for another process's writer (busy
                # timeout) instead of failing "locked" at once.
                isolation_level="DEFERRED",
                uri=self._in_memory,
            )
            try:
                # Foreign keys are off by default; WAL lets readers run
                # beside a writer.
                await connection.execute("PRAGMA foreign_keys=ON")
                await connection.execute("PRAGMA journal_mode=WAL")
                await connection.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
            except BaseException:
                # A file SQLite cannot read fails here, and so may a cancel:
                # closed, or its driver thread would keep the process from
                # ever exiting.
                await asyncio.shield(connection.close())
                raise
            self._sqlite = connection
        return self._sqlite

    def _sqlite_target(self) -> str:
        if self._in_memory:
            # Named and shared, so the migration's own connection sees it.
            return f"file:gptmini-{id(self)}?mode=memory&cache=shared"
        assert self.url.database is not None
        return self.url.database

    async def migrate(self) -> None:
        """Every migration up to head, in one transaction (db/migrate.py)."""
        if await self.is_migrated():
            return  # the usual start: nothing to do, and no SQLAlchemy loaded
        from gptmini_graphql.db.migrate import upgrade

        if self._in_memory:
            await self._sqlite_connection()  # keeps the database alive meanwhile
            await upgrade(f"sqlite+aiosqlite:///{self._sqlite_target()}&uri=true")
        else:
            await upgrade(self.url.render_as_string(hide_password=False))

    async def is_migrated(self) -> bool:
        """Whether the database is at the latest migration (nothing to do):
        Alembic's version table names HEAD alone (what Alembic itself reads)."""
        exists = (
            "SELECT to_regclass('alembic_version') IS NOT NULL"
            if self.postgres
            else "SELECT count(*) FROM sqlite_master "
            "WHERE type = 'table' AND name = 'alembic_version'"
        )
        async with self.transaction() as transaction:
            if not await transaction.fetchval(exists):
                return False
            current = await transaction.fetch("SELECT version_num FROM alembic_version")
        return {row[0] for row in current} == {HEAD}

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._sqlite is not None:
            await self._sqlite.close()
            self._sqlite = None


def alembic_config(connection: object | None = None) -> Config:
    from alembic.config import Config  # only to migrate: see HEAD

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


class _PostgresTransaction(Transaction):
    def __init__(self, connection: asyncpg.pool.PoolConnectionProxy) -> None:
        self._connection = connection

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        _log(sql)
        return list(await self._connection.fetch(sql, *args))

    async def execute(self, sql: str, *args: object) -> int:
        _log(sql)
        status = await self._connection.execute(sql, *args)
        # "UPDATE 2", "INSERT 0 1", "DELETE 0": the count is the last word.
        last = status.rpartition(" ")[2]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        _log(sql)
        await self._connection.executemany(sql, rows)


class _SQLiteTransaction(Transaction):
    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        _log(sql)
        async with self._connection.execute(_sqlite(sql), args) as cursor:
            return list(await cursor.fetchall())

    async def execute(self, sql: str, *args: object) -> int:
        _log(sql)
        async with self._connection.execute(_sqlite(sql), args) as cursor:
            return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        _log(sql)
        await self._connection.executemany(_sqlite(sql), rows)


_PLACEHOLDER = re.compile(r"\$(\d+)")


@lru_cache(maxsize=256)
def _sqlite(sql: str) -> str:
    """`$1` (PostgreSQL's) as SQLite's numbered `?1`: the same arguments."""
    return _PLACEHOLDER.sub(r"?\1", sql)


def _log(sql: str) -> None:
    # Each statement, at DEBUG (LOG_LEVEL=DEBUG): what a request asked.
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("sql", extra={"statement": sql})


def _driver_errors(
    postgres: bool,
) -> tuple[
    tuple[type[BaseException], ...],
    tuple[type[BaseException], ...],
    tuple[type[BaseException], ...],
]:
    """What a duplicate row raises; what an unreachable, restarting or locked
    database raises (not a bug of ours); and, among those, what is a bug of
    ours after all. asyncpg's refusals (a database not accepting
    connections) are PostgresErrors too; our own mistakes are its data and
    syntax ones. SQLite's are alike: a locked, unreadable or damaged file is
    a DatabaseError, our mistakes its Programming and Data errors. A SQLite
    server never imports asyncpg."""
    outages: tuple[type[BaseException], ...] = (
        sqlite3.DatabaseError,
        OSError,
        TimeoutError,
    )
    if not postgres:
        ours = (sqlite3.ProgrammingError, sqlite3.DataError)
        return (sqlite3.IntegrityError,), outages, ours
    import asyncpg

    return (
        (asyncpg.IntegrityConstraintViolationError,),
        (*outages, asyncpg.PostgresError, asyncpg.InterfaceError),
        (asyncpg.DataError, asyncpg.SyntaxOrAccessError),
    )
