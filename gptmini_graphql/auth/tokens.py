"""Access tokens: short-lived HS256 JWTs naming a user (`sub`) and the
session they belong to (`sid`), with a `kid` saying which secret signed them.

JWT_SECRET signs; JWT_PREVIOUS_SECRETS still verify, so a secret can be
rotated without logging everyone out.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from cachetools import LRUCache

from gptmini_graphql.errors import Unauthenticated

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "sid", "iat", "exp", "jti"]

# Verified tokens remembered, so a client's every request does not pay for
# the signature check again (a tenth of a cheap request's CPU).
VERIFIED_CACHE_SIZE = 4096

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: uuid.UUID
    session_id: uuid.UUID
    expires: float


def key_id(secret: str) -> str:
    """Names a secret without revealing it."""
    return hashlib.sha256(b"gptmini kid:" + secret.encode()).hexdigest()[:12]


class TokenService:
    def __init__(
        self,
        secret: str,
        ttl_seconds: int,
        previous_secrets: Sequence[str] = (),
        clock: Clock | None = None,
    ) -> None:
        self._kid = key_id(secret)
        self._secret = secret
        self._verifying = {key_id(s): s for s in (*previous_secrets, secret)}
        self._ttl = timedelta(seconds=ttl_seconds)
        self._clock = clock or time.time
        self._verified: LRUCache[str, Claims] = LRUCache(VERIFIED_CACHE_SIZE)

    def issue(self, user_id: uuid.UUID, session_id: uuid.UUID) -> AccessToken:
        now = datetime.fromtimestamp(int(self._clock()), UTC)
        expires_at = now + self._ttl
        claims = {
            "sub": str(user_id),
            "sid": str(session_id),
            "iat": now,
            "exp": expires_at,
            "jti": secrets.token_urlsafe(16),
        }
        token = jwt.encode(claims, self._secret, ALGORITHM, headers={"kid": self._kid})
        return AccessToken(token, expires_at)

    def verify(self, token: str) -> Claims:
        """The token's user and session, or UNAUTHENTICATED. Whether the
        session still stands is the caller's question (Identities)."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            self._verified[token] = claims
        # The signature was checked once; time moves on.
        if self._clock() >= claims.expires:
            raise Unauthenticated("The access token has expired; refresh or log in.")
        return claims

    def _decode(self, token: str) -> Claims:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            secret = self._verifying.get(kid) if isinstance(kid, str) else None
            if secret is None:  # no kid, or a secret we no longer know
                raise Unauthenticated("The access token is invalid.")
            # One allowed algorithm: `none` and algorithm-confusion tokens fail
            # here. Expiry is checked against our clock, by `verify`.
            claims = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                options={"require": REQUIRED_CLAIMS, "verify_exp": False},
            )
            return Claims(
                uuid.UUID(claims["sub"]),
                uuid.UUID(claims["sid"]),
                float(claims["exp"]),
            )
        except (jwt.PyJWTError, ValueError, TypeError, AttributeError) as exc:
            raise Unauthenticated("The access token is invalid.") from exc


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("The Authorization header must be 'Bearer <token>'.")
    return token.strip()
