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
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update

from gptmini_graphql.db.database import Database
from gptmini_graphql.db.models import ApiKey
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
    def of(cls, key: ApiKey) -> KeyInfo:
        return cls(
            key.id,
            key.user_id,
            key.name,
            key.prefix,
            key.created_at,
            key.expires_at,
            key.revoked_at,
            key.last_used_at,
            dict(key.budgets) if key.budgets else None,
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
        key = ApiKey(
            user_id=user_id,
            name=name,
            prefix=secret[:SHOWN],
            key_hash=digest(secret),
            created_at=self._now(),
            expires_at=expires_at,
        )
        async with self._db.session() as session:
            session.add(key)
        return KeyInfo.of(key), secret

    async def list(self, user_id: uuid.UUID) -> list[KeyInfo]:
        async with self._db.session() as session:
            keys = await session.scalars(
                select(ApiKey)
                .where(ApiKey.user_id == user_id)
                .order_by(ApiKey.created_at, ApiKey.name)
            )
            return [KeyInfo.of(key) for key in keys]

    async def set_budgets(
        self,
        user_id: uuid.UUID | None,
        key_id: uuid.UUID,
        changes: dict[str, float | int | None],
    ) -> KeyInfo:
        """Set a key's own budgets by name (None removes one), for its owner
        (`user_id`) or, with None, for an admin."""
        from gptmini_graphql.spend.budgets import check_overrides

        async with self._db.session() as session:
            key = await session.get(ApiKey, key_id, with_for_update=True)
            if key is None or (user_id is not None and key.user_id != user_id):
                raise BadUserInput("No such API key.")
            merged = {**(key.budgets or {}), **changes}
            budgets = check_overrides(
                {k: v for k, v in merged.items() if v is not None}
            )
            key.budgets = budgets or None
            info = KeyInfo.of(key)
        self._on_revoke()  # cached identities carry the old budgets
        return info

    async def revoke(self, user_id: uuid.UUID | None, key_id: uuid.UUID) -> KeyInfo:
        """Revoke a key of `user_id` (None: any user's, for admins)."""
        statement = update(ApiKey).where(ApiKey.id == key_id)
        if user_id is not None:
            statement = statement.where(ApiKey.user_id == user_id)
        async with self._db.session() as session:
            key = await session.scalar(
                statement.values(revoked_at=self._now()).returning(ApiKey)
            )
            if key is None:
                # Someone else's key reads as no key at all.
                raise BadUserInput("No such API key.")
            info = KeyInfo.of(key)
        self._on_revoke()
        return info
