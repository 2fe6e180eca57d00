"""Accounts: the database and everything kept in it about who may call
(users, sessions, API keys), with the cached identities requests use."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from gptmini_graphql.auth.api_keys import ApiKeyStore
from gptmini_graphql.auth.identities import Identities
from gptmini_graphql.auth.last_used import FLUSH_SECONDS
from gptmini_graphql.auth.sessions import SessionStore
from gptmini_graphql.auth.tokens import TokenService
from gptmini_graphql.auth.users import UserStore
from gptmini_graphql.db.database import Database
from gptmini_graphql.db.flush_loop import FlushLoop
from gptmini_graphql.errors import DatabaseUnavailable
from gptmini_graphql.settings import Settings

logger = logging.getLogger("gptmini_graphql")


class NotMigrated(RuntimeError):
    """The server was told not to migrate, and the database needs it."""


@dataclass(slots=True)
class Accounts:
    """Users, their sessions and API keys, and who a request's token is."""

    db: Database
    users: UserStore
    sessions: SessionStore
    api_keys: ApiKeyStore
    identities: Identities
    tokens: TokenService
    _last_use_writes: FlushLoop | None = field(default=None, repr=False)

    @classmethod
    async def start(cls, settings: Settings, clock: Callable[[], float]) -> Accounts:
        db = Database(settings.database_url)
        if settings.database_migrate_on_start:
            await db.migrate()
        elif not await db.is_migrated():
            await db.aclose()
            raise NotMigrated(
                f"{db.description} is not at the latest migration and "
                "DATABASE_MIGRATE_ON_START is false: run "
                "`python -m gptmini_graphql db upgrade` first."
            )
        tokens = TokenService(
            settings.jwt_secret.get_secret_value(),
            settings.jwt_ttl_seconds,
            [s.get_secret_value() for s in settings.jwt_previous_secrets],
            clock,
        )
        identities = Identities(db, tokens, settings.auth_cache_ttl_seconds, clock)
        # A change made here reaches this replica's caches at once.
        forget = identities.forget
        users = UserStore(db, clock, on_change=forget)
        accounts = cls(
            db=db,
            users=users,
            sessions=SessionStore(
                db, settings.refresh_token_ttl_days, clock, on_revoke=forget
            ),
            api_keys=ApiKeyStore(db, clock, on_revoke=forget),
            identities=identities,
            tokens=tokens,
        )
        seeded = await users.seed(
            settings.fake_username, settings.fake_password.get_secret_value()
        )
        if seeded is not None:
            logger.info("created the first user, an admin, from FAKE_USERNAME")
        accounts._last_use_writes = FlushLoop(
            identities.last_used.flush, FLUSH_SECONDS, _last_use_not_recorded
        )
        accounts._last_use_writes.start()
        return accounts

    async def aclose(self) -> None:
        if self._last_use_writes is not None:
            await self._last_use_writes.stop()
        try:
            await self.identities.last_used.flush()
        except DatabaseUnavailable:
            _last_use_not_recorded()
        await self.db.aclose()


def _last_use_not_recorded() -> None:
    logger.warning("could not record API keys' last use", exc_info=True)
