"""Who a bearer token or API key is, without a database query per request.

What the database says about a session or a key (and its user) is cached
for AUTH_CACHE_TTL_SECONDS. A revocation made on this replica clears the
cache at once; one made on another replica takes effect here within that
bound. Expiry is checked on every request against the clock.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cachetools import TTLCache
from limits import parse_many
from sqlalchemy import select

from gptmini_graphql.auth.api_keys import SHOWN, digest, looks_like_key
from gptmini_graphql.auth.last_used import LastUsed
from gptmini_graphql.auth.principal import Principal, Role
from gptmini_graphql.auth.tokens import TokenService
from gptmini_graphql.db.database import Database
from gptmini_graphql.db.models import ApiKey, AuthSession, User
from gptmini_graphql.errors import Unauthenticated

CACHE_SIZE = 10_000
SESSION_ENDED = "The session has ended; log in again."
KEY_REFUSED = "The API key is invalid, expired or revoked."


@dataclass(frozen=True, slots=True)
class _KeyEntry:
    principal: Principal
    expires: float | None


def principal_of(
    user: User, key: ApiKey | None = None, **via: uuid.UUID
) -> Principal | None:
    """The caller a user row makes, or None if the user may not call."""
    if user.disabled:
        return None
    limits = tuple(parse_many(user.rate_limit)) if user.rate_limit else None
    return Principal(
        user.id,
        user.username,
        Role(user.role),
        limits,
        budgets=tuple((user.budgets or {}).items()),
        key_budgets=tuple((key.budgets or {}).items()) if key else (),
        **via,
    )


class Identities:
    def __init__(
        self,
        db: Database,
        tokens: TokenService,
        ttl_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._db = db
        self._tokens = tokens
        self._clock = clock
        self.last_used = LastUsed(db, clock)
        self._sessions: TTLCache[uuid.UUID, Principal | None] = TTLCache(
            CACHE_SIZE, ttl_seconds, timer=clock
        )
        self._api_keys: TTLCache[bytes, _KeyEntry | None] = TTLCache(
            CACHE_SIZE, ttl_seconds, timer=clock
        )

    async def identify(self, token: str) -> Principal:
        """The caller, or UNAUTHENTICATED (whose message never holds the token)."""
        if looks_like_key(token):
            return await self._by_key(token)
        claims = self._tokens.verify(token)
        try:
            principal = self._sessions[claims.session_id]
        except KeyError:
            principal = await self._load_session(claims.session_id)
            self._sessions[claims.session_id] = principal
        if principal is None or principal.user_id != claims.user_id:
            raise Unauthenticated(SESSION_ENDED)
        return principal

    def forget(self) -> None:
        """After a revocation here: nothing cached may outlive it."""
        self._sessions.clear()
        self._api_keys.clear()

    async def _load_session(self, session_id: uuid.UUID) -> Principal | None:
        async with self._db.session() as session:
            row = (
                await session.execute(
                    select(AuthSession, User)
                    .join(User, AuthSession.user_id == User.id)
                    .where(AuthSession.id == session_id)
                )
            ).first()
        if row is None or row[0].revoked_at is not None:
            return None
        return principal_of(row[1], session_id=session_id)

    async def _by_key(self, secret: str) -> Principal:
        key_hash = digest(secret)
        try:
            entry = self._api_keys[key_hash]
        except KeyError:
            entry = await self._load_key(secret, key_hash)
            self._api_keys[key_hash] = entry
        if entry is None or (
            entry.expires is not None and self._clock() >= entry.expires
        ):
            raise Unauthenticated(KEY_REFUSED)
        assert entry.principal.api_key_id is not None
        self.last_used.used(entry.principal.api_key_id)
        return entry.principal

    async def _load_key(self, secret: str, key_hash: bytes) -> _KeyEntry | None:
        async with self._db.session() as session:
            rows = (
                await session.execute(
                    select(ApiKey, User)
                    .join(User, ApiKey.user_id == User.id)
                    .where(ApiKey.prefix == secret[:SHOWN])
                )
            ).all()
        for key, user in rows:
            if not hmac.compare_digest(key.key_hash, key_hash):
                continue
            if key.revoked_at is not None:
                return None
            principal = principal_of(user, key, api_key_id=key.id)
            if principal is None:
                return None
            expires = key.expires_at.timestamp() if key.expires_at else None
            return _KeyEntry(principal, expires)
        return None
