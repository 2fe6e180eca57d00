"""DATABASE_URL as people write it, turned into the async driver's URL.

Parsed here rather than by SQLAlchemy: a server reads its DATABASE_URL at
every start, and SQLAlchemy is only loaded to migrate (db/migrate.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode

# Unset DATABASE_URL: a file under a directory that git ignores.
DEFAULT_SQLITE_PATH = Path("data") / "gptmini.sqlite3"

_POSTGRES = {"postgres", "postgresql", "postgresql+asyncpg", "postgresql+psycopg2",
             "postgresql+psycopg", "postgresql+pg8000"}  # fmt: skip
_SQLITE = {"sqlite", "sqlite+aiosqlite", "sqlite+pysqlite"}


class DatabaseURLError(ValueError):
    """A DATABASE_URL we cannot use; the message says why (never the password)."""


# What follows "scheme://", read as SQLAlchemy reads it (its engine/url.py),
# so the migrations' engine and the server agree on each part: a password
# may hold an unescaped '/', '?' or '#', and is hidden whole in logs.
_PARTS = re.compile(
    r"""
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:\[[^/?]+\]|[^/:?]+)?(?::[^/?]*)?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True, slots=True)
class DatabaseURL:
    """A database URL with the driver we ship: `postgresql+asyncpg://…` or
    `sqlite+aiosqlite://…`, written as SQLAlchemy writes it (migrations
    hand it to SQLAlchemy)."""

    backend: Literal["postgresql", "sqlite"]
    # After the scheme's "//": credentials, host, path (as written, escaped).
    rest: str
    query: tuple[tuple[str, str], ...] = ()

    @property
    def _parts(self) -> re.Match[str]:
        parts = _PARTS.fullmatch(self.rest)
        assert parts is not None  # async_url matched it
        return parts

    @property
    def database(self) -> str | None:
        """A SQLite file's path (None: in memory), or PostgreSQL's database."""
        return unquote(self._parts["database"] or "") or None

    @property
    def password(self) -> str | None:
        password = self._parts["password"]
        return None if password is None else unquote(password)

    def _with_password(self, written: str) -> str:
        parts = self._parts
        if parts["password"] is None:
            return self.rest
        start, end = parts.span("password")
        return self.rest[:start] + written + self.rest[end:]

    def render_as_string(self, *, hide_password: bool = True) -> str:
        driver = "asyncpg" if self.backend == "postgresql" else "aiosqlite"
        rest = self._with_password("***") if hide_password else self.rest
        query = f"?{urlencode(self.query)}" if self.query else ""
        return f"{self.backend}+{driver}://{rest}{query}"

    def asyncpg_dsn(self) -> str:
        """The URL asyncpg connects to (libpq's words: `sslmode`), its
        password escaped as asyncpg's own URL parser needs."""
        password = self.password
        rest = (
            self.rest
            if password is None
            else self._with_password(quote(password, safe=""))
        )
        query = [("sslmode" if k == "ssl" else k, v) for k, v in self.query]
        return f"postgresql://{rest}" + (f"?{urlencode(query)}" if query else "")


def async_url(database_url: str | None) -> DatabaseURL:
    """`sqlite:///path.db`, `sqlite://` (in memory), `postgresql://user@host/db`
    and their driver-qualified forms, each with the async driver we ship."""
    if database_url is None:
        return DatabaseURL("sqlite", f"/{DEFAULT_SQLITE_PATH}")
    scheme, separator, rest = database_url.partition("://")
    parts = _PARTS.fullmatch(rest)
    if not separator or not scheme or parts is None:
        raise DatabaseURLError(
            "DATABASE_URL is not a URL like sqlite:///data/app.db or "
            "postgresql://user@host:5432/db."
        )
    query_text = parts["query"]
    if query_text is not None:
        rest = rest[: parts.start("query") - 1]
    query = parse_qsl(query_text or "", keep_blank_values=True)
    if scheme in _SQLITE:
        return DatabaseURL("sqlite", rest, tuple(query))
    if scheme in _POSTGRES:
        # libpq's sslmode is asyncpg's ssl (the values are the same words).
        query = [("ssl" if k == "sslmode" else k, v) for k, v in query]
        return DatabaseURL("postgresql", rest, tuple(query))
    raise DatabaseURLError(
        f"DATABASE_URL's scheme {scheme!r} is not supported: use "
        "sqlite:///path or postgresql://user@host/db."
    )


def describe(url: DatabaseURL) -> str:
    """For logs: the URL without its password."""
    return url.render_as_string(hide_password=True)
