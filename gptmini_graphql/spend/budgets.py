"""Which budgets bind a caller: per user (settings' defaults, or an admin's
overrides) and per API key (its own), each per day or month in USD or
tokens; and the token rate limit, per user per minute.

Amounts are integers: tokens, or nano-dollars (USD * 10**9), so a budget,
its reservations and the ledger add up exactly.
"""

from __future__ import annotations

import calendar
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from gptmini_graphql.settings import Settings

NANO = 10**9
# The largest budgets we take. Above $1M a period the nano-dollar counters
# would pass 2**53, where Redis's Lua numbers stop being exact integers; a
# token budget is a GraphQL Int (32 bits). A larger budget means "unlimited":
# leave it unset.
MAX_USD = 1_000_000
MAX_TOKENS = 2**31 - 1

Unit = Literal["usd", "tokens"]
Period = Literal["minute", "day", "month"]
Scope = Literal["user", "key"]

# The overridable budgets: name -> (unit, period). Names are what settings,
# the database (users.budgets, api_keys.budgets) and the schema use.
BUDGETS: dict[str, tuple[Unit, Period]] = {
    "usd_per_day": ("usd", "day"),
    "usd_per_month": ("usd", "month"),
    "tokens_per_day": ("tokens", "day"),
    "tokens_per_month": ("tokens", "month"),
    "tokens_per_minute": ("tokens", "minute"),  # the token rate limit
}


def to_nano(usd: float) -> int:
    return round(usd * NANO)


def from_nano(nano: int) -> float:
    return nano / NANO


def window(period: Period, now: float) -> tuple[datetime, datetime]:
    """The UTC period holding `now`: [start, end)."""
    at = datetime.fromtimestamp(now, UTC)
    if period == "minute":
        start = at.replace(second=0, microsecond=0)
        return start, start + timedelta(minutes=1)
    if period == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)
    start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    days = calendar.monthrange(start.year, start.month)[1]
    return start, start + timedelta(days=days)


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget of one caller in the current period."""

    scope: Scope
    owner: uuid.UUID  # the user's or the key's id
    name: str  # a key of BUDGETS
    limit: int  # tokens or nano-dollars
    start: datetime
    end: datetime
    # The name of its spent counter for this period.
    counter: str = field(init=False, compare=False)
    # For clients: `user.usd_per_day`, `key.tokens_per_month`, ...
    label: str = field(init=False, compare=False)
    # When its period ends, as clients read it (2026-01-01T00:00:00Z).
    resets_at: str = field(init=False, compare=False)
    ends: float = field(init=False, compare=False)  # `end`, as a timestamp

    def __post_init__(self) -> None:
        counter = f"{self.scope}:{self.owner}:{self.name}:{self.start:%Y%m%dT%H%M}"
        object.__setattr__(self, "counter", counter)
        object.__setattr__(self, "label", f"{self.scope}.{self.name}")
        resets_at = self.end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        object.__setattr__(self, "resets_at", resets_at)
        object.__setattr__(self, "ends", self.end.timestamp())

    @property
    def unit(self) -> Unit:
        return BUDGETS[self.name][0]

    @property
    def period(self) -> Period:
        return BUDGETS[self.name][1]

    def amount(self, usd_nano: int, tokens: int) -> int:
        return usd_nano if self.unit == "usd" else tokens

    def shown(self, amount: int) -> float | int:
        """An amount as clients read it: dollars, or tokens."""
        return from_nano(amount) if self.unit == "usd" else amount


def defaults(settings: Settings) -> dict[str, float | int]:
    """The per-user budgets settings set (unset ones are unlimited)."""
    values = {
        "usd_per_day": settings.budget_usd_per_day,
        "usd_per_month": settings.budget_usd_per_month,
        "tokens_per_day": settings.budget_tokens_per_day,
        "tokens_per_month": settings.budget_tokens_per_month,
        "tokens_per_minute": settings.token_rate_limit,
    }
    return {name: value for name, value in values.items() if value is not None}


def effective(
    overrides: Mapping[str, float | int] | None, default: Mapping[str, float | int]
) -> dict[str, float | int]:
    """A user's budgets: the defaults, replaced name by name by overrides."""
    return {**default, **(overrides or {})}


def budgets_of(
    user_id: uuid.UUID,
    user_limits: Mapping[str, float | int],
    key_id: uuid.UUID | None,
    key_limits: Mapping[str, float | int] | None,
    now: float,
) -> list[Budget]:
    """Every budget a call by this caller counts against, right now."""
    found = []
    callers: tuple[tuple[Scope, uuid.UUID | None, Mapping[str, float | int]], ...] = (
        ("user", user_id, user_limits),
        ("key", key_id, key_limits or {}),
    )
    for scope, owner, limits in callers:
        if owner is None:
            continue
        for name, value in limits.items():
            unit, period = BUDGETS[name]
            start, end = window(period, now)
            limit = to_nano(value) if unit == "usd" else int(value)
            found.append(Budget(scope, owner, name, limit, start, end))
    return found


def check_overrides(values: Mapping[str, object]) -> dict[str, float | int]:
    """Overrides as stored: known names, non-negative numbers."""
    from gptmini_graphql.errors import BadUserInput

    checked: dict[str, float | int] = {}
    for name, value in values.items():
        if name not in BUDGETS:
            raise BadUserInput(f"Unknown budget {name!r}.")
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise BadUserInput("A budget is a number of 0 or more.")
        unit = BUDGETS[name][0]
        if value > (MAX_USD if unit == "usd" else MAX_TOKENS):
            raise BadUserInput(
                f"A budget in {unit.upper() if unit == 'usd' else unit} is at most "
                f"{MAX_USD if unit == 'usd' else MAX_TOKENS:,}; "
                "null removes it (unlimited)."
            )
        checked[name] = float(value) if unit == "usd" else int(value)
    return checked
