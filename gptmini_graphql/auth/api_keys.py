"""API keys for scripts: `gm_` + 32 random bytes, shown once.

Stored as SHA-256 (the key is 256 random bits: nothing to guess, so no slow
hash is needed) beside its first characters, which find the row and let
people tell their keys apart. Which key a request holds is Identities'
question (auth/identities.py); when it was last used, LastUsed's.
"""

from __future__ import annotations

import hashlib
import secrets
import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from gptmini_graphql.db.database import Database, Row
from gptmini_graphql.db.values import Values
from gptmini_graphql.errors import BadUserInput

PREFIX = "gm_"
SHOWN = len(PREFIX) + 8  # "gm_" and 48 bits: the lookup prefix
MAX_NAME = 100


def looks_like_key(token: str) -> bool:
    return token.startswith(PREFIX)


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True, slots=True)
class KeyInfo:
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    budgets: dict[str, float | int] | None = None  # the key's own

    @classmethod
    def of(cls, row: Row, values: Values) -> KeyInfo:
        """From a row of COLUMNS."""
        budgets = values.to_json(row[8])
        return cls(
            values.to_uuid(row[0]),
            values.to_uuid(row[1]),
            row[2],
            row[3],
            values.to_time(row[4]),  # type: ignore[arg-type]
            values.to_time(row[5]),
            values.to_time(row[6]),
            values.to_time(row[7]),
            dict(budgets) if budgets else None,
        )


# A key's columns as KeyInfo.of reads them.
COLUMNS = (
    "id, user_id, name, prefix, created_at, expires_at, revoked_at, last_used_at, "
    "budgets"
)


class ApiKeyStore:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], float],
        on_revoke: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._clock = clock
        self._on_revoke = on_revoke

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def create(
        self, user_id: uuid.UUID, name: str, expires_at: datetime | None
    ) -> tuple[KeyInfo, str]:
        """The key's description and its secret, which is not kept."""
        name = name.strip()
        if not name or len(name) > MAX_NAME:
            raise BadUserInput(f"A key's name has 1 to {MAX_NAME} characters.")
        if any(unicodedata.category(c).startswith("C") for c in name):
            raise BadUserInput("A key's name cannot contain control characters.")
        if expires_at is not None:
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            if expires_at <= self._now():
                raise BadUserInput("expiresAt must be in the future.")
        secret = PREFIX + secrets.token_urlsafe(32)
        key = KeyInfo(
            uuid.uuid4(), user_id, name, secret[:SHOWN], self._now(), expires_at,
            None, None,
        )  # fmt: skip
        values = self._db.values
        async with self._db.transaction() as transaction:
            await transaction.execute(
                "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, "
                "created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                values.uuid(key.id),
                values.uuid(user_id),
                name,
                key.prefix,
                digest(secret),
                values.time(key.created_at),
                values.time(expires_at),
            )
        return key, secret

    async def list(self, user_id: uuid.UUID) -> list[KeyInfo]:
        values = self._db.values
        async with self._db.transaction() as transaction:
            rows = await transaction.fetch(
                f"SELECT {COLUMNS} FROM api_keys WHERE user_id = $1 "  # noqa: S608
                "ORDER BY created_at, name",
                values.uuid(user_id),
            )
        return [KeyInfo.of(row, values) for row in rows]

    async def set_budgets(
        self,
        user_id: uuid.UUID | None,
        key_id: uuid.UUID,
        changes: dict[str, float | int | None],
    ) -> KeyInfo:
        """Set a key's own budgets by name (None removes one), for its owner
        (`user_id`) or, with None, for an admin."""
        from gptmini_graphql.spend.budgets import check_overrides

        values = self._db.values
        # SQLite locks the whole database for a write; PostgreSQL, the row.
        lock = " FOR UPDATE" if self._db.postgres else ""
        async with self._db.transaction() as transaction:
            row = await transaction.fetchrow(
                f"SELECT {COLUMNS} FROM api_keys WHERE id = $1{lock}",  # noqa: S608
                values.uuid(key_id),
            )
            key = None if row is None else KeyInfo.of(row, values)
            if key is None or (user_id is not None and key.user_id != user_id):
                raise BadUserInput("No such API key.")
            merged = {**(key.budgets or {}), **changes}
            budgets = check_overrides(
                {k: v for k, v in merged.items() if v is not None}
            )
            await transaction.execute(
                "UPDATE api_keys SET budgets = $2 WHERE id = $1",
                values.uuid(key_id),
                values.json(budgets or None),
            )
            info = replace(key, budgets=dict(budgets) if budgets else None)
        self._on_revoke()  # cached identities carry the old budgets
        return info

    async def revoke(self, user_id: uuid.UUID | None, key_id: uuid.UUID) -> KeyInfo:
        """Revoke a key of `user_id` (None: any user's, for admins)."""
        values = self._db.values
        owner = "" if user_id is None else " AND user_id = $3"
        async with self._db.transaction() as transaction:
            row = await transaction.fetchrow(
                f"UPDATE api_keys SET revoked_at = $2 WHERE id = $1{owner} "  # noqa: S608
                f"RETURNING {COLUMNS}",
                values.uuid(key_id),
                values.time(self._now()),
                *(() if user_id is None else (values.uuid(user_id),)),
            )
        if row is None:
            # Someone else's key reads as no key at all.
            raise BadUserInput("No such API key.")
        self._on_revoke()
        return KeyInfo.of(row, values)
