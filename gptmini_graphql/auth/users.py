"""The users who may log in: for now the one user named in settings."""

from __future__ import annotations

import hashlib
import hmac

from pydantic import SecretStr


def _digest(value: str) -> bytes:
    # Equal-length digests, so the comparison's time says nothing about lengths.
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


class SettingsUserStore:
    def __init__(self, username: str, password: SecretStr) -> None:
        self._username = _digest(username)
        self._password = _digest(password.get_secret_value())

    def authenticate(self, username: str, password: str) -> bool:
        """Constant time: both parts are always compared, whichever is wrong."""
        name_ok = hmac.compare_digest(_digest(username), self._username)
        password_ok = hmac.compare_digest(_digest(password), self._password)
        return name_ok & password_ok
