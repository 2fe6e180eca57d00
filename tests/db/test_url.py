"""DATABASE_URL as people write it: the async driver is ours to pick."""

from __future__ import annotations

import pytest

from gptmini_graphql.db.url import DatabaseURLError, async_url, describe
from gptmini_graphql.settings import Settings


@pytest.mark.parametrize(
    ("written", "used"),
    [
        (None, "sqlite+aiosqlite:///data/gptmini.sqlite3"),
        ("sqlite:///app.db", "sqlite+aiosqlite:///app.db"),
        ("sqlite:////var/lib/app.db", "sqlite+aiosqlite:////var/lib/app.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgres://u:p@h:5433/db", "postgresql+asyncpg://u:p@h:5433/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+asyncpg://u@h/db"),
        ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
        (
            "postgresql://u@h/db?sslmode=require",
            "postgresql+asyncpg://u@h/db?ssl=require",
        ),
    ],
)
def test_urls_people_write_get_the_async_driver(written, used) -> None:
    assert async_url(written).render_as_string(hide_password=False) == used


@pytest.mark.parametrize(
    ("written", "path"),
    [
        ("sqlite:///data/app.db", "data/app.db"),
        ("sqlite:////var/lib/app.db", "/var/lib/app.db"),
        ("sqlite:///my%20data/app.db", "my data/app.db"),
        ("sqlite:///data/app#2.db", "data/app#2.db"),  # a '#' is no fragment
        ("sqlite://", None),
    ],
)
def test_the_sqlite_file_is_the_one_migrations_see(written, path) -> None:
    from sqlalchemy.engine import make_url

    url = async_url(written)
    assert url.database == path
    assert make_url(url.render_as_string(hide_password=False)).database == path


@pytest.mark.parametrize("bad", ["mysql://u@h/db", "not a url", "redis://h:6379/0"])
def test_other_urls_are_refused_at_start_saying_what_works(bad) -> None:
    with pytest.raises(DatabaseURLError, match="postgresql://"):
        async_url(bad)
    with pytest.raises(ValueError, match="DATABASE_URL"):
        Settings(_env_file=None, database_url=bad)


def test_a_logged_url_hides_its_password() -> None:
    assert "hunter2" not in describe(async_url("postgresql://u:hunter2@h/db"))


@pytest.mark.parametrize("password", ["hun#ter2", "hun/ter2", "hun?ter2"])
def test_a_password_written_unescaped_is_hidden_and_read_whole(password) -> None:
    from sqlalchemy.engine import make_url

    url = async_url(f"postgresql://u:{password}@h:5432/db?sslmode=require")
    assert describe(url) == "postgresql+asyncpg://u:***@h:5432/db?ssl=require"
    assert url.password == password  # as the migrations' SQLAlchemy reads it
    migrations = make_url(url.render_as_string(hide_password=False))
    assert (migrations.password, migrations.host) == (password, "h")
