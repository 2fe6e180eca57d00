"""Access tokens: HS256 JWTs with `sub`, `iat`, `exp` and `jti`."""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from gptmini_graphql.errors import Unauthenticated

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["sub", "iat", "exp", "jti"]


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_at: datetime


# Verified tokens remembered, so a client's every request does not pay for
# the signature check again (a tenth of a cheap request's CPU).
VERIFIED_CACHE_SIZE = 4096


class TokenService:
    def __init__(self, secret: str, ttl_seconds: int) -> None:
        self._secret = secret
        self._ttl = timedelta(seconds=ttl_seconds)
        self._verified: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def issue(self, username: str) -> AccessToken:
        now = datetime.now(UTC).replace(microsecond=0)
        expires_at = now + self._ttl
        claims = {
            "sub": username,
            "iat": now,
            "exp": expires_at,
            "jti": secrets.token_urlsafe(16),
        }
        return AccessToken(jwt.encode(claims, self._secret, ALGORITHM), expires_at)

    def verify(self, token: str) -> str:
        """The username the token was issued to, or UNAUTHENTICATED."""
        if (known := self._verified.get(token)) is not None:
            subject, expires = known
            if time.time() < expires:  # the signature was checked; time moves on
                self._verified.move_to_end(token)
                return subject
            del self._verified[token]
        try:
            # One allowed algorithm: `none` and algorithm-confusion tokens fail here.
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated(
                "The access token has expired; log in again."
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated("The access token is invalid.") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise Unauthenticated("The access token is invalid.")
        self._verified[token] = (subject, float(claims["exp"]))
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return subject


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, if any."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("The Authorization header must be 'Bearer <token>'.")
    return token.strip()
