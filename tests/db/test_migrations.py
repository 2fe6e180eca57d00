"""Every table comes from a migration: an empty database upgraded to head
matches the models exactly, on SQLite and (with DATABASE_URL) PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from gptmini_graphql.auth.accounts import NotMigrated
from gptmini_graphql.db.database import HEAD, SQLITE_CACHE_KIB, Database, alembic_config
from gptmini_graphql.db.models import Base


def _state(database_url: str) -> tuple[list, set[str], str | None]:
    async def run():
        # SQLAlchemy's own engine: what Alembic compares with (the server
        # reads and writes without SQLAlchemy).
        url = Database(database_url).url.render_as_string(hide_password=False)
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(_inspect)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _inspect(connection) -> tuple[list, set[str], str | None]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    diff = compare_metadata(context, Base.metadata)
    return (
        diff,
        set(inspect(connection).get_table_names()),
        context.get_current_revision(),
    )


def _upgrade(database_url: str) -> subprocess.CompletedProcess:
    # The operators' command, in a process of its own.
    return subprocess.run(
        [sys.executable, "-m", "gptmini_graphql", "db", "upgrade"],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_empty_database_upgraded_to_head_matches_the_models(database_url) -> None:
    upgraded = _upgrade(database_url)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "migrated to head" in upgraded.stdout
    diff, tables, revision = _state(database_url)
    assert diff == []
    assert set(Base.metadata.tables) <= tables
    assert revision is not None
    # Again: nothing to do, nothing breaks.
    assert _upgrade(database_url).returncode == 0
    assert _state(database_url)[0] == []


def test_the_server_migrates_on_start(make_api, database_url) -> None:
    make_api(database_url=database_url).login()
    assert _state(database_url)[0] == []


def test_a_server_told_not_to_migrate_refuses_an_unmigrated_database(
    make_api, database_url
) -> None:
    with pytest.raises(NotMigrated, match="db upgrade"):
        make_api(database_url=database_url, database_migrate_on_start=False)
    assert _upgrade(database_url).returncode == 0
    assert make_api(database_url=database_url, database_migrate_on_start=False).login()


def test_head_is_the_latest_migration() -> None:
    # A server finds a database at HEAD without Alembic: add a migration, move it.
    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD]


def test_a_sqlite_connection_keeps_a_small_page_cache(tmp_path) -> None:
    # Each pooled connection's cache grew with the ledger (database.py).
    async def cache_size() -> int:
        database = Database(f"sqlite:///{tmp_path / 'cache.sqlite3'}")
        try:
            async with database.transaction() as transaction:
                return int(await transaction.fetchval("PRAGMA cache_size"))
        finally:
            await database.aclose()

    assert asyncio.run(cache_size()) == -SQLITE_CACHE_KIB
