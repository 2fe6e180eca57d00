"""`python -m gptmini_graphql usage prune | export`: the ledger's retention
and its rows as CSV, against the database DATABASE_URL names."""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TextIO, cast

from sqlalchemy import CursorResult, delete, select

from gptmini_graphql.db.database import Database
from gptmini_graphql.db.models import LedgerRow
from gptmini_graphql.settings import Settings
from gptmini_graphql.spend.budgets import window

COLUMNS = [
    "at", "user_id", "api_key_id", "request_id", "operation", "field", "model",
    "upstream", "prompt_tokens", "completion_tokens", "cached_tokens",
    "cost_usd", "cached", "estimated", "latency_ms", "outcome",
]  # fmt: skip


def _day(value: str) -> datetime:
    """A date (YYYY-MM-DD, midnight UTC) or an ISO time."""
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a date like 2026-11-01"
        ) from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    usage = commands.add_parser("usage", help="the usage ledger")
    actions = usage.add_subparsers(dest="usage_command", required=True)
    prune = actions.add_parser(
        "prune", help="delete rows older than LEDGER_RETENTION_DAYS (or --before)"
    )
    prune.add_argument("--before", type=_day, help="delete rows before this date")
    export = actions.add_parser("export", help="rows of [from, to) as CSV")
    export.add_argument("--from", dest="start", type=_day, required=True)
    export.add_argument("--to", dest="end", type=_day, required=True)
    export.add_argument("--output", help="write to this file (default: stdout)")


def run(args: argparse.Namespace) -> int:
    settings = Settings()
    if args.usage_command == "prune":
        before = args.before
        if before is None:
            if settings.ledger_retention_days is None:
                print("LEDGER_RETENTION_DAYS is unset: rows are kept", file=sys.stderr)
                return 2
            days = settings.ledger_retention_days
            before = datetime.now(UTC) - timedelta(days=days)
        month_start, _ = window("month", time.time())
        if before > month_start:
            # This month's budgets are seeded from its rows (a restarted
            # Redis, a new replica): without them they would start again.
            print(
                f"--before must not be later than {month_start:%Y-%m-%d}: this "
                "month's budgets are counted from its rows",
                file=sys.stderr,
            )
            return 2
        deleted = asyncio.run(_prune(settings, before))
        print(f"deleted {deleted} ledger rows from before {before:%Y-%m-%d %H:%M} UTC")
        return 0
    if args.end <= args.start:
        print("--to must be later than --from", file=sys.stderr)
        return 2
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            count = asyncio.run(_export(settings, args.start, args.end, out))
        print(f"wrote {count} rows to {args.output}", file=sys.stderr)
    else:
        asyncio.run(_export(settings, args.start, args.end, sys.stdout))
    return 0


async def _prune(settings: Settings, before: datetime) -> int:
    db = Database(settings.database_url)
    try:
        async with db.session() as session:
            # A DELETE's result is a CursorResult (it has the rowcount), but
            # AsyncSession.execute is typed as returning the base Result.
            result = cast(
                "CursorResult[()]",
                await session.execute(delete(LedgerRow).where(LedgerRow.at < before)),
            )
            return result.rowcount or 0
    finally:
        await db.aclose()


async def _export(
    settings: Settings, start: datetime, end: datetime, out: TextIO
) -> int:
    db = Database(settings.database_url)
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    count = 0
    try:
        async with db.session() as session:
            rows = await session.stream_scalars(
                select(LedgerRow)
                .where(LedgerRow.at >= start, LedgerRow.at < end)
                .order_by(LedgerRow.at, LedgerRow.id)
            )
            async for row in rows:
                cost = row.cost_nano_usd
                writer.writerow(
                    [
                        row.at.isoformat(), row.user_id, row.api_key_id or "",
                        _text(row.request_id), _text(row.operation or ""),
                        _text(row.field), _text(row.model),
                        _text(row.upstream or ""), row.prompt_tokens, row.completion_tokens,
                        row.cached_tokens, "" if cost is None else f"{cost / 1e9:.9f}",
                        row.cached, row.estimated, row.latency_ms, row.outcome,
                    ]
                )  # fmt: skip
                count += 1
    finally:
        await db.aclose()
    return count


def _text(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula: request ids come
    from clients and model names from upstreams (OWASP's CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
