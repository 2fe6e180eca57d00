"""When each API key was last used: remembered in memory, written every
FLUSH_SECONDS and at shutdown, so a request costs a dict write, not a
database write. A crash loses at most one interval's times."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from gptmini_graphql.db.database import Database

FLUSH_SECONDS = 60.0


class LastUsed:
    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock
        self._pending: dict[uuid.UUID, float] = {}

    def used(self, key_id: uuid.UUID) -> None:
        self._pending[key_id] = self._clock()

    async def flush(self) -> None:
        """Write the remembered times (a stored time only moves forward)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        values = self._db.values
        try:
            async with self._db.transaction() as transaction:
                for key_id, when in pending.items():
                    at = values.time(datetime.fromtimestamp(when, UTC))
                    await transaction.execute(
                        "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 "
                        "AND (last_used_at IS NULL OR last_used_at < $2)",
                        values.uuid(key_id),
                        at,
                    )
        except BaseException:
            # Kept for the next flush (newer uses since then win).
            self._pending = pending | self._pending
            raise
