"""Users in the database: created, listed, changed, and checked at login."""

from __future__ import annotations

import unicodedata
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from limits import parse_many
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from gptmini_graphql.auth import passwords
from gptmini_graphql.auth.principal import Role
from gptmini_graphql.db.database import Database
from gptmini_graphql.db.models import AuthSession, User
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
    def of(cls, user: User) -> UserInfo:
        return cls(
            user.id,
            user.username,
            Role(user.role),
            user.disabled,
            user.rate_limit,
            user.created_at,
            dict(user.budgets) if user.budgets else None,
        )


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
        user = User(
            username=username,
            password_hash=password_hash,
            role=role_.value,
            disabled=False,
            created_at=now,
            updated_at=now,
        )
        try:
            async with self._db.session() as session:
                session.add(user)
        except IntegrityError:
            raise BadUserInput("A user of that name exists already.") from None
        return UserInfo.of(user)

    async def seed(self, username: str, password: str) -> UserInfo | None:
        """The settings' user, as an admin, if there is no user at all yet
        (the first start): deployments from before the database keep working."""
        async with self._db.session() as session:
            if await session.scalar(select(func.count()).select_from(User)):
                return None
        try:
            return await self.create(username, password, "admin", check_password=False)
        except BadUserInput:
            return None  # another replica seeded it a moment ago

    async def authenticate(self, username: str, password: str) -> UserInfo | None:
        """The user, if the password is theirs and they are enabled; the same
        work whichever part is wrong."""
        user = None
        if 0 < len(username) <= MAX_USERNAME:
            async with self._db.session() as session:
                user = await session.scalar(
                    select(User).where(User.username == username)
                )
        ok = await passwords.verify(user.password_hash if user else None, password)
        if not ok or user is None or user.disabled:
            return None
        return UserInfo.of(user)

    async def get(self, username: str) -> UserInfo:
        async with self._db.session() as session:
            user = await session.scalar(select(User).where(User.username == username))
        if user is None:
            raise BadUserInput("No such user.")
        return UserInfo.of(user)

    async def get_by_id(self, user_id: uuid.UUID) -> UserInfo | None:
        async with self._db.session() as session:
            user = await session.get(User, user_id)
        return UserInfo.of(user) if user else None

    async def all(self) -> list[UserInfo]:
        async with self._db.session() as session:
            users = await session.scalars(select(User).order_by(User.username))
            return [UserInfo.of(user) for user in users]

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
            username, {"budgets": budgets or None}, end_sessions=False
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
        now = self._now()
        async with self._db.session() as session:
            user = await session.scalar(
                update(User)
                .where(User.username == username)
                .values(**values, updated_at=now)
                .returning(User)
            )
            if user is None:
                raise BadUserInput("No such user.")
            if end_sessions:
                # A new password or a disabled user: every session ends.
                await session.execute(
                    update(AuthSession)
                    .where(AuthSession.user_id == user.id)
                    .where(AuthSession.revoked_at.is_(None))
                    .values(
                        revoked_at=now,
                        revoked_reason="disabled"
                        if values.get("disabled")
                        else "password",
                    )
                )
            info = UserInfo.of(user)
        self._on_change()
        return info
