"""Our values as each backend stores them: the forms the tables were made for
(db/models.py's SQLAlchemy types), so rows read and written without
SQLAlchemy are the rows it reads and writes (migrations and old rows).

PostgreSQL (asyncpg) has native uuid, timestamptz and boolean; SQLite keeps
a UUID as 32 hex digits, a time as UTC text with microseconds, and a boolean
as 0 or 1. JSON is text on both.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

# SQLAlchemy's SQLite DATETIME storage format: text that sorts as time does.
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"


class Values:
    """PostgreSQL's: values go to asyncpg as they are."""

    def uuid(self, value: UUID | None) -> Any:
        return value

    def time(self, value: datetime | None) -> Any:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value

    def json(self, value: object) -> str | None:
        return None if value is None else json.dumps(value)

    def to_uuid(self, value: Any) -> UUID:
        """A stored id (not null)."""
        assert isinstance(value, UUID)  # asyncpg's UUID is one
        return value

    def to_time(self, value: Any) -> datetime | None:
        assert value is None or isinstance(value, datetime)
        return value  # aware, in UTC

    def to_json(self, value: str | None) -> Any:
        return None if value is None else json.loads(value)


class SQLiteValues(Values):
    def uuid(self, value: UUID | None) -> Any:
        return None if value is None else value.hex

    def time(self, value: datetime | None) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC).strftime(_SQLITE_TIME)

    def to_uuid(self, value: Any) -> UUID:
        return UUID(value)

    def to_time(self, value: Any) -> datetime | None:
        if value is None:
            return None
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
