"""The usage ledger: one row per LLM call, the truth that usage and budgets
are read from.

A call's row is queued in memory (a list append) and written with the rows
of other calls every FLUSH_SECONDS, in one INSERT, by a task of its own: the
request never waits for the database. A clean shutdown writes what is
queued. A crash loses at most the rows queued since the last write (one
FLUSH_SECONDS window, plus any a database outage held back). While the
database cannot take them, rows wait, up to MAX_QUEUED; past that, new rows
are dropped and counted (gptmini_ledger_rows_dropped_total).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter

from gptmini_graphql.db.database import Database
from gptmini_graphql.db.flush_loop import FlushLoop
from gptmini_graphql.db.values import Values
from gptmini_graphql.errors import DatabaseUnavailable
from gptmini_graphql.metrics import Metrics

logger = logging.getLogger("gptmini_graphql.ledger")

FLUSH_SECONDS = 1.0
MAX_QUEUED = 100_000
BATCH_ROWS = 1000  # rows per INSERT


@dataclass(slots=True)
class Entry:
    """One LLM call, as the ledger keeps it (see db.models.LedgerRow)."""

    at: datetime
    user_id: uuid.UUID
    api_key_id: uuid.UUID | None
    request_id: str
    operation: str | None
    field: str
    model: str
    upstream: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_nano_usd: int | None
    cached: bool
    estimated: bool
    latency_ms: int
    outcome: str

    def values(self, stored: Values) -> tuple[object, ...]:
        """The row's values in _COLUMNS' order, as the database stores them."""
        at, user_id, api_key_id, *rest = _values_of(self)
        return (
            stored.time(at),
            stored.uuid(user_id),
            stored.uuid(api_key_id),
            *rest,
            self.day(),
        )

    def day(self) -> str:
        return self.at.astimezone(UTC).date().isoformat()  # strftime: 3x the CPU


_FIELDS = tuple(field.name for field in fields(Entry))
_values_of = attrgetter(*_FIELDS)  # at, user_id and api_key_id first
_COLUMNS = (*_FIELDS, "day")
# One prepared statement for a batch (the driver's executemany). Only our
# own column names go into it.
_INSERT = "INSERT INTO ledger ({}) VALUES ({})".format(  # noqa: S608
    ", ".join(_COLUMNS), ", ".join(f"${n}" for n in range(1, len(_COLUMNS) + 1))
)


class Ledger:
    def __init__(
        self, db: Database, metrics: Metrics, *, flush_seconds: float = FLUSH_SECONDS
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._queued: list[Entry] = []
        self._writes = FlushLoop(self.flush, flush_seconds, self._waiting)
        self._flushing = asyncio.Lock()

    def start(self) -> None:
        self._writes.start()

    def record(self, entry: Entry) -> None:
        if len(self._queued) >= MAX_QUEUED:
            self._metrics.ledger_dropped.inc()
            return
        self._queued.append(entry)

    async def flush(self) -> None:
        """Write every queued row now (readers call it first: what they read
        then includes this process's latest calls).

        Shielded from its caller's cancellation (a reader whose client left,
        the flush loop stopped at shutdown): cancelled while its COMMIT was
        on the wire, a batch the database may have kept would stay queued
        and be written again by the next flush, a second row for each call.
        The write goes on to its end; a flush after it waits for it (the
        lock) and finds those rows gone."""
        await asyncio.shield(self._write_queued())

    async def _write_queued(self) -> None:
        async with self._flushing:
            while self._queued:
                batch = self._queued[:BATCH_ROWS]
                stored = self._db.values
                try:
                    async with self._db.transaction() as transaction:
                        await transaction.executemany(
                            _INSERT, [entry.values(stored) for entry in batch]
                        )
                except DatabaseUnavailable:
                    raise  # kept: written once the database is back
                except Exception:
                    # Rows the database refuses would block every later one.
                    logger.exception(
                        "usage ledger rows refused", extra={"rows": len(batch)}
                    )
                    self._metrics.ledger_dropped.inc(len(batch))
                else:
                    self._metrics.ledger_written.inc(len(batch))
                del self._queued[: len(batch)]

    def _waiting(self) -> None:
        logger.warning(
            "could not write the usage ledger; rows wait in memory",
            extra={"queued": len(self._queued)},
        )

    async def aclose(self) -> None:
        await self._writes.stop()
        try:
            await self.flush()
        except Exception:
            self._metrics.ledger_dropped.inc(len(self._queued))
            logger.exception(
                "usage ledger rows lost at shutdown", extra={"rows": len(self._queued)}
            )
