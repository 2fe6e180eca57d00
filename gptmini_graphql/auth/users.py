"""Users in the database: created, listed, changed, and checked at login."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from limits import parse_many

from gptmini_graphql.auth import passwords
from gptmini_graphql.auth.principal import Role
from gptmini_graphql.db.database import Conflict, Database, Row
from gptmini_graphql.db.values import Values
from gptmini_graphql.errors import BadUserInput

MAX_USERNAME = 64
MAX_RATE_LIMIT = 200


def check_username(username: str) -> str:
    """1-64 printable characters, no surrounding spaces: what a person can
    read back, type, and see in a log line."""
    if not username:
        raise BadUserInput("A username cannot be empty.")
    if len(username) > MAX_USERNAME:
        raise BadUserInput(f"A username has at most {MAX_USERNAME} characters.")
    if username != username.strip():
        raise BadUserInput("A username cannot start or end with a space.")
    if any(
        unicodedata.category(c).startswith(("C", "Z")) and c != " " for c in username
    ):
        raise BadUserInput("A username cannot contain control or invisible characters.")
    return username


def check_role(role: str) -> Role:
    try:
        return Role(role.lower())
    except ValueError:
        raise BadUserInput(
            f"Unknown role; use one of: {', '.join(r.value for r in Role)}."
        ) from None


def check_rate_limit(value: str | None) -> str | None:
    """A limit like RATE_LIMIT's ('100/minute;5000/day'), or None for the default."""
    if value is None:
        return None
    try:
        if len(value) > MAX_RATE_LIMIT or not parse_many(value):
            raise ValueError(value)
    except ValueError:
        raise BadUserInput(
            "A rate limit looks like '100/minute' or '100/minute;5000/day'."
        ) from None
    return value


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: uuid.UUID
    username: str
    role: Role
    disabled: bool
    rate_limit: str | None
    created_at: datetime
    budgets: dict[str, float | int] | None = None  # overrides of the defaults

    @classmethod
    def of(cls, row: Row, values: Values) -> UserInfo:
        """From a row of COLUMNS."""
        user_id, username, role, disabled, rate_limit, created_at, budgets = row
        budgets = values.to_json(budgets)
        return cls(
            values.to_uuid(user_id),
            username,
            Role(role),
            bool(disabled),
            rate_limit,
            values.to_time(created_at),  # type: ignore[arg-type]
            dict(budgets) if budgets else None,
        )


# A user's columns as UserInfo.of reads them.
COLUMNS = "id, username, role, disabled, rate_limit, created_at, budgets"
_SELECT = f"SELECT {COLUMNS} FROM users"  # noqa: S608 - our own column names


class UserStore:
    def __init__(
        self,
        db: Database,
        clock: Callable[[], float],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._db = db
        self._clock = clock
        # Called after a change that must end sessions or keys (cache flush).
        self._on_change = on_change

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def create(
        self, username: str, password: str, role: str, *, check_password: bool = True
    ) -> UserInfo:
        check_username(username)
        role_ = check_role(role)
        if check_password:
            passwords.check_new(password)
        password_hash = await passwords.hash_password(password)
        now = self._now()
        user = UserInfo(uuid.uuid4(), username, role_, False, None, now)
        values = self._db.values
        try:
            async with self._db.transaction() as transaction:
                await transaction.execute(
                    "INSERT INTO users (id, username, password_hash, role, disabled,"
                    " created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    values.uuid(user.id),
                    username,
                    password_hash,
                    role_.value,
                    False,
                    values.time(now),
                )
        except Conflict:
            raise BadUserInput("A user of that name exists already.") from None
        return user

    async def seed(self, username: str, password: str) -> UserInfo | None:
        """The settings' user, as an admin, if there is no user at all yet
        (the first start): deployments from before the database keep working."""
        async with self._db.transaction() as transaction:
            if await transaction.fetchval("SELECT count(*) FROM users"):
                return None
        try:
            return await self.create(username, password, "admin", check_password=False)
        except BadUserInput:
            return None  # another replica seeded it a moment ago

    async def authenticate(self, username: str, password: str) -> UserInfo | None:
        """The user, if the password is theirs and they are enabled; the same
        work whichever part is wrong."""
        row = None
        if 0 < len(username) <= MAX_USERNAME:
            async with self._db.transaction() as transaction:
                row = await transaction.fetchrow(
                    f"SELECT password_hash, {COLUMNS} FROM users "  # noqa: S608
                    "WHERE username = $1",
                    username,
                )
        ok = await passwords.verify(row[0] if row else None, password)
        if not ok or row is None:
            return None
        user = UserInfo.of(row[1:], self._db.values)
        return None if user.disabled else user

    async def get(self, username: str) -> UserInfo:
        async with self._db.transaction() as transaction:
            row = await transaction.fetchrow(f"{_SELECT} WHERE username = $1", username)
        if row is None:
            raise BadUserInput("No such user.")
        return UserInfo.of(row, self._db.values)

    async def get_by_id(self, user_id: uuid.UUID) -> UserInfo | None:
        values = self._db.values
        async with self._db.transaction() as transaction:
            row = await transaction.fetchrow(
                f"{_SELECT} WHERE id = $1", values.uuid(user_id)
            )
        return UserInfo.of(row, values) if row else None

    async def all(self) -> list[UserInfo]:
        async with self._db.transaction() as transaction:
            rows = await transaction.fetch(f"{_SELECT} ORDER BY username")
        return [UserInfo.of(row, self._db.values) for row in rows]

    async def update(
        self,
        username: str,
        *,
        role: str | None = None,
        disabled: bool | None = None,
        rate_limit: str | None = None,
        clear_rate_limit: bool = False,
    ) -> UserInfo:
        """Checks every value before writing any."""
        values: dict[str, object] = {}
        if role is not None:
            values["role"] = check_role(role).value
        if disabled is not None:
            values["disabled"] = disabled
        if clear_rate_limit:
            values["rate_limit"] = None
        elif rate_limit is not None:
            values["rate_limit"] = check_rate_limit(rate_limit)
        return await self._update(username, values, end_sessions=bool(disabled))

    async def set_budgets(
        self, username: str, changes: dict[str, float | int | None]
    ) -> UserInfo:
        """Override budgets by name; None puts one back to the default."""
        from gptmini_graphql.spend.budgets import check_overrides

        current = (await self.get(username)).budgets or {}
        merged = {**current, **changes}
        budgets = check_overrides({k: v for k, v in merged.items() if v is not None})
        return await self._update(
            username,
            {"budgets": self._db.values.json(budgets or None)},
            end_sessions=False,
        )

    async def set_password(self, username: str, password: str) -> UserInfo:
        passwords.check_new(password)
        password_hash = await passwords.hash_password(password)
        return await self._update(
            username, {"password_hash": password_hash}, end_sessions=True
        )

    async def _update(
        self, username: str, values: dict[str, object], *, end_sessions: bool
    ) -> UserInfo:
        """`values`: column names (ours, never a caller's) and stored values."""
        now = self._db.values.time(self._now())
        # updated_at even when nothing else changes (no dangling comma).
        assignments = ", ".join(
            ["updated_at = $2", *(f"{c} = ${n}" for n, c in enumerate(values, 3))]
        )
        async with self._db.transaction() as transaction:
            row = await transaction.fetchrow(
                f"UPDATE users SET {assignments} "  # noqa: S608
                f"WHERE username = $1 RETURNING {COLUMNS}",
                username,
                now,
                *values.values(),
            )
            if row is None:
                raise BadUserInput("No such user.")
            info = UserInfo.of(row, self._db.values)
            if end_sessions:
                # A new password or a disabled user: every session ends.
                await transaction.execute(
                    "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 "
                    "WHERE user_id = $1 AND revoked_at IS NULL",
                    self._db.values.uuid(info.id),
                    now,
                    "disabled" if values.get("disabled") else "password",
                )
        self._on_change()
        return info
