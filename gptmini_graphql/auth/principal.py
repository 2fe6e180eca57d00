"""The caller of a request, as the auth caches remember it."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from limits import RateLimitItem


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls and through what: a session (JWT) or an API key. The usage
    ledger keys its rows by `user_id` and `api_key_id`."""

    user_id: uuid.UUID
    username: str
    role: Role
    # The user's own rate limits, or None for the RATE_LIMIT default.
    rate_limits: tuple[RateLimitItem, ...] | None = None
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    # Budget overrides (spend/budgets.py names): the user's, and the key's own.
    budgets: tuple[tuple[str, float], ...] = ()
    key_budgets: tuple[tuple[str, float], ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN
