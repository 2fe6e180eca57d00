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
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from gptmini_graphql.db.database import Database
from gptmini_graphql.db.models import AuthSession, RefreshToken, User
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
        async with self._db.session() as session:
            auth_session = AuthSession(user_id=user_id, created_at=now)
            session.add(auth_session)
            await session.flush()
            return self._new_token(session, auth_session.id, user_id, now)

    def _new_token(
        self,
        session: AsyncSession,
        session_id: uuid.UUID,
        user_id: uuid.UUID,
        now: datetime,
    ) -> Refreshed:
        token = PREFIX + secrets.token_urlsafe(32)
        expires_at = now + self._ttl
        session.add(
            RefreshToken(
                token_hash=_digest(token),
                session_id=session_id,
                created_at=now,
                expires_at=expires_at,
            )
        )
        return Refreshed(user_id, session_id, token, expires_at)

    async def rotate(self, token: str) -> Refreshed:
        """A new refresh token for an unused, unexpired one of a live session
        of an enabled user; anything else is UNAUTHENTICATED."""
        now = self._now()
        digest = _digest(token)
        reused = None
        async with self._db.session() as session:
            row = (
                await session.execute(
                    select(RefreshToken, AuthSession, User)
                    .join(AuthSession, RefreshToken.session_id == AuthSession.id)
                    .join(User, AuthSession.user_id == User.id)
                    .where(RefreshToken.token_hash == digest)
                )
            ).first()
            if row is None:
                raise Unauthenticated(INVALID)
            refresh, auth_session, user = row
            if auth_session.revoked_at is not None or user.disabled:
                raise Unauthenticated(INVALID)
            if refresh.expires_at <= now:
                raise Unauthenticated(INVALID)
            # Conditional: of two concurrent uses, exactly one wins.
            won = await session.execute(
                update(RefreshToken)
                .where(RefreshToken.token_hash == digest)
                .where(RefreshToken.used_at.is_(None))
                .values(used_at=now)
            )
            if cast(CursorResult[Any], won).rowcount == 1:
                return self._new_token(session, auth_session.id, user.id, now)
            reused = auth_session.id
        await self.revoke(reused, "reuse")
        logger.warning(
            "refresh token reused: session revoked",
            extra={"session_id": str(reused)},
        )
        raise Unauthenticated(INVALID)

    async def revoke(self, session_id: uuid.UUID, reason: str) -> None:
        async with self._db.session() as session:
            await session.execute(
                update(AuthSession)
                .where(AuthSession.id == session_id)
                .where(AuthSession.revoked_at.is_(None))
                .values(revoked_at=self._now(), revoked_reason=reason)
            )
        self._on_revoke()

    async def revoke_by_token(self, token: str) -> None:
        """Logout with a refresh token: its session ends (unknown tokens: no-op)."""
        async with self._db.session() as session:
            session_id = await session.scalar(
                select(RefreshToken.session_id).where(
                    RefreshToken.token_hash == _digest(token)
                )
            )
        if session_id is not None:
            await self.revoke(session_id, "logout")
