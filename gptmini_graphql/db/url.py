"""DATABASE_URL as people write it, turned into the async driver's URL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

# Unset DATABASE_URL: a file under a directory that git ignores.
DEFAULT_SQLITE_PATH = Path("data") / "gptmini.sqlite3"

_POSTGRES = {"postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg2",
             "postgresql+psycopg", "postgresql+pg8000"}  # fmt: skip
_SQLITE = {"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"}


class DatabaseURLError(ValueError):
    """A DATABASE_URL we cannot use; the message says why (never the password)."""


def async_url(database_url: str | None) -> URL:
    """`sqlite:///path.db`, `sqlite://` (in memory), `postgresql://user@host/db`
    and their driver-qualified forms, each with the async driver we ship."""
    if database_url is None:
        return URL.create("sqlite+aiosqlite", database=str(DEFAULT_SQLITE_PATH))
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise DatabaseURLError(
            "DATABASE_URL is not a URL like sqlite:///data/app.db or "
            "postgresql://user@host:5432/db."
        ) from exc
    if url.drivername in _SQLITE:
        return url.set(drivername="sqlite+aiosqlite")
    if url.drivername in _POSTGRES:
        query = dict(url.query)
        # libpq's sslmode is asyncpg's ssl (the values are the same words).
        if "sslmode" in query:
            query["ssl"] = query.pop("sslmode")
        return url.set(drivername="postgresql+asyncpg", query=query)
    raise DatabaseURLError(
        f"DATABASE_URL's scheme {url.drivername!r} is not supported: use "
        "sqlite:///path or postgresql://user@host/db."
    )


def describe(url: URL) -> str:
    """For logs: the URL without its password."""
    return url.render_as_string(hide_password=True)
