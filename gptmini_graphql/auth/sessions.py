"""Sessions: one per login, kept going by rotating refresh tokens.

A refresh token is opaque (`gmr_` + 32 random bytes) and stored as its
SHA-256. Each use replaces it; presenting a used one again means it was
copied, so the whole session (its family of tokens) is revoked, as OAuth 2.0
Security Best Current Practice (RFC 9700, 4.14) describes.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gptmini_graphql.db.database import Database, Transaction
from gptmini_graphql.errors import Unauthenticated

logger = logging.getLogger("gptmini_graphql.auth")

PREFIX = "gmr_"
INVALID = "The refresh token is invalid, expired or already used; log in again."


@dataclass(frozen=True, slots=True)
class Refreshed:
    user_id: uuid.UUID
    session_id: uuid.UUID
    refresh_token: str
    refresh_expires_at: datetime


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class SessionStore:
    def __init__(
        self,
        db: Database,
        ttl_days: int,
        clock: Callable[[], float],
        on_revoke: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._ttl = timedelta(days=ttl_days)
        self._clock = clock
        self._on_revoke = on_revoke

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def start(self, user_id: uuid.UUID) -> Refreshed:
        now = self._now()
        session_id = uuid.uuid4()
        values = self._db.values
        async with self._db.transaction() as transaction:
            await transaction.execute(
                "INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3)",
                values.uuid(session_id),
                values.uuid(user_id),
                values.time(now),
            )
            return await self._new_token(transaction, session_id, user_id, now)

    async def _new_token(
        self,
        transaction: Transaction,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        now: datetime,
    ) -> Refreshed:
        token = PREFIX + secrets.token_urlsafe(32)
        expires_at = now + self._ttl
        values = self._db.values
        await transaction.execute(
            "INSERT INTO refresh_tokens (token_hash, session_id, created_at, "
            "expires_at) VALUES ($1, $2, $3, $4)",
            _digest(token),
            values.uuid(session_id),
            values.time(now),
            values.time(expires_at),
        )
        return Refreshed(user_id, session_id, token, expires_at)

    async def rotate(self, token: str) -> Refreshed:
        """A new refresh token for an unused, unexpired one of a live session
        of an enabled user; anything else is UNAUTHENTICATED."""
        now = self._now()
        digest = _digest(token)
        values = self._db.values
        async with self._db.transaction() as transaction:
            row = await transaction.fetchrow(
                "SELECT refresh_tokens.expires_at, sessions.id, sessions.revoked_at, "
                "users.id, users.disabled FROM refresh_tokens "
                "JOIN sessions ON refresh_tokens.session_id = sessions.id "
                "JOIN users ON sessions.user_id = users.id "
                "WHERE refresh_tokens.token_hash = $1",
                digest,
            )
            if row is None:
                raise Unauthenticated(INVALID)
            expires_at, session_id, revoked_at, user_id, disabled = row
            if revoked_at is not None or disabled:
                raise Unauthenticated(INVALID)
            if values.to_time(expires_at) <= now:  # type: ignore[operator]
                raise Unauthenticated(INVALID)
            session_id = values.to_uuid(session_id)
            # Conditional: of two concurrent uses, exactly one wins.
            won = await transaction.execute(
                "UPDATE refresh_tokens SET used_at = $2 "
                "WHERE token_hash = $1 AND used_at IS NULL",
                digest,
                values.time(now),
            )
            if won == 1:
                return await self._new_token(
                    transaction, session_id, values.to_uuid(user_id), now
                )
        await self.revoke(session_id, "reuse")
        logger.warning(
            "refresh token reused: session revoked",
            extra={"session_id": str(session_id)},
        )
        raise Unauthenticated(INVALID)

    async def revoke(self, session_id: uuid.UUID, reason: str) -> None:
        values = self._db.values
        async with self._db.transaction() as transaction:
            await transaction.execute(
                "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 "
                "WHERE id = $1 AND revoked_at IS NULL",
                values.uuid(session_id),
                values.time(self._now()),
                reason,
            )
        self._on_revoke()

    async def revoke_by_token(self, token: str) -> None:
        """Logout with a refresh token: its session ends (unknown tokens: no-op)."""
        async with self._db.transaction() as transaction:
            session_id = await transaction.fetchval(
                "SELECT session_id FROM refresh_tokens WHERE token_hash = $1",
                _digest(token),
            )
        if session_id is not None:
            await self.revoke(self._db.values.to_uuid(session_id), "logout")
