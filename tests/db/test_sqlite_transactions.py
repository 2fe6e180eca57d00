"""SQLite: one connection per process, whose transactions take turns. A
transaction cancelled at any point leaves the connection ready for the next,
and a transaction that reads before it writes waits for another process's
writer as a write does (as it did over SQLAlchemy), rather than failing."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from gptmini_graphql.db.database import Database
from gptmini_graphql.errors import DatabaseUnavailable


def test_a_cancelled_transaction_leaves_the_connection_usable(tmp_path: Path) -> None:
    async def run() -> None:
        db = Database(f"sqlite:///{tmp_path}/t.sqlite3")
        try:
            async with db.transaction() as transaction:
                await transaction.execute("CREATE TABLE t (x INTEGER)")

            async def write() -> None:
                async with db.transaction() as transaction:
                    await transaction.execute("INSERT INTO t VALUES (1)")
                    await transaction.execute("INSERT INTO t VALUES (2)")

            # Cancelled at each of its awaits in turn (0: before it starts).
            for steps in range(8):
                task = asyncio.create_task(write())
                for _ in range(steps):
                    await asyncio.sleep(0)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                async with db.transaction() as transaction:
                    count = await transaction.fetchval("SELECT count(*) FROM t")
                    assert count % 2 == 0  # all of a transaction, or none
        finally:
            await db.aclose()

    asyncio.run(run())


def test_a_read_then_write_waits_for_another_process(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/t.sqlite3"

    async def run() -> None:
        ours, theirs = Database(url), Database(url)  # two processes' connections
        try:
            async with ours.transaction() as transaction:
                await transaction.execute("CREATE TABLE t (x INTEGER)")
            async with ours.transaction() as transaction:
                assert await transaction.fetch("SELECT x FROM t") == []
                async with theirs.transaction() as other:
                    await other.execute("INSERT INTO t VALUES (1)")
                await transaction.execute("INSERT INTO t VALUES (2)")
            async with ours.transaction() as transaction:
                assert await transaction.fetchval("SELECT count(*) FROM t") == 2
        finally:
            await ours.aclose()
            await theirs.aclose()

    asyncio.run(run())


def test_a_damaged_file_is_an_outage_and_our_mistake_is_not(tmp_path: Path) -> None:
    """As over SQLAlchemy: a file SQLite cannot read is DATABASE_UNAVAILABLE
    (a coded, retryable refusal), a statement of ours SQLite refuses is a bug
    and raised as it is; and neither leaves the driver's thread behind (it
    would keep the process from exiting)."""
    damaged = tmp_path / "damaged.sqlite3"
    damaged.write_bytes(b"not a database, " * 256)
    before = set(threading.enumerate())

    async def run() -> None:
        db = Database(f"sqlite:///{damaged}")
        try:
            with pytest.raises(DatabaseUnavailable):
                async with db.transaction() as transaction:
                    await transaction.fetch("SELECT 1 FROM sqlite_master")
        finally:
            await db.aclose()
        db = Database(f"sqlite:///{tmp_path}/fine.sqlite3")
        try:
            with pytest.raises(sqlite3.ProgrammingError):
                async with db.transaction() as transaction:
                    await transaction.fetch("SELECT ?1, ?2", 1)
        finally:
            await db.aclose()

    asyncio.run(run())
    left = [t for t in set(threading.enumerate()) - before if not t.daemon]
    for thread in left:
        thread.join(timeout=5)
    assert not [t.name for t in left if t.is_alive()]
