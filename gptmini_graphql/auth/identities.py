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

from gptmini_graphql.auth.api_keys import SHOWN, digest, looks_like_key
from gptmini_graphql.auth.last_used import LastUsed
from gptmini_graphql.auth.principal import Principal, Role
from gptmini_graphql.auth.tokens import TokenService
from gptmini_graphql.auth.users import COLUMNS as USER_COLUMNS
from gptmini_graphql.auth.users import UserInfo
from gptmini_graphql.db.database import Database
from gptmini_graphql.errors import Unauthenticated

CACHE_SIZE = 10_000
SESSION_ENDED = "The session has ended; log in again."
KEY_REFUSED = "The API key is invalid, expired or revoked."


@dataclass(frozen=True, slots=True)
class _KeyEntry:
    principal: Principal
    expires: float | None


# The user's columns, from a join whose users table is named `users`.
_USER = ", ".join(f"users.{column}" for column in USER_COLUMNS.split(", "))
_SESSION = (
    f"SELECT sessions.revoked_at, {_USER} FROM sessions "  # noqa: S608 - ours
    "JOIN users ON sessions.user_id = users.id WHERE sessions.id = $1"
)
_KEYS_BY_PREFIX = (
    "SELECT api_keys.key_hash, api_keys.revoked_at, api_keys.id, "  # noqa: S608
    f"api_keys.budgets, api_keys.expires_at, {_USER} "
    "FROM api_keys JOIN users ON api_keys.user_id = users.id "
    "WHERE api_keys.prefix = $1"
)


def principal_of(
    user: UserInfo,
    key_budgets: dict[str, float | int] | None = None,
    **via: uuid.UUID,
) -> Principal | None:
    """The caller a user makes, or None if the user may not call."""
    if user.disabled:
        return None
    limits = tuple(parse_many(user.rate_limit)) if user.rate_limit else None
    return Principal(
        user.id,
        user.username,
        Role(user.role),
        limits,
        budgets=tuple((user.budgets or {}).items()),
        key_budgets=tuple((key_budgets or {}).items()),
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
        values = self._db.values
        async with self._db.transaction() as transaction:
            row = await transaction.fetchrow(_SESSION, values.uuid(session_id))
        if row is None or row[0] is not None:
            return None
        return principal_of(UserInfo.of(row[1:], values), session_id=session_id)

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
        values = self._db.values
        async with self._db.transaction() as transaction:
            rows = await transaction.fetch(_KEYS_BY_PREFIX, secret[:SHOWN])
        for stored_hash, revoked_at, key_id, budgets, expires_at, *user in rows:
            if not hmac.compare_digest(bytes(stored_hash), key_hash):
                continue
            if revoked_at is not None:
                return None
            principal = principal_of(
                UserInfo.of(user, values),
                values.to_json(budgets),
                api_key_id=values.to_uuid(key_id),
            )
            if principal is None:
                return None
            expires_at = values.to_time(expires_at)
            expires = expires_at.timestamp() if expires_at else None
            return _KeyEntry(principal, expires)
        return None
