"""`python -m gptmini_graphql usage prune | export`: the ledger's retention
and its rows as CSV, against the database DATABASE_URL names."""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TextIO

from gptmini_graphql.db.database import Database
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
        async with db.transaction() as transaction:
            return await transaction.execute(
                "DELETE FROM ledger WHERE at < $1", db.values.time(before)
            )
    finally:
        await db.aclose()


async def _export(
    settings: Settings, start: datetime, end: datetime, out: TextIO
) -> int:
    db = Database(settings.database_url)
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    count = 0
    values = db.values
    try:
        after: tuple[object, int] | None = None  # the last row written
        while True:
            # Pages in (at, id) order: a million rows are never all in memory.
            async with db.transaction() as transaction:
                sql, arguments = _page(db, start, end, after)
                rows = await transaction.fetch(sql, *arguments)
            for row in rows:
                (
                    at, user_id, api_key_id, request_id, operation, field, model,
                    upstream, prompt_tokens, completion_tokens, cached_tokens, cost,
                    cached, estimated, latency_ms, outcome, _id,
                ) = row  # fmt: skip
                writer.writerow(
                    [
                        values.to_time(at).isoformat(),  # type: ignore[union-attr]
                        values.to_uuid(user_id), "" if api_key_id is None else values.to_uuid(api_key_id),
                        _text(request_id), _text(operation or ""),
                        _text(field), _text(model),
                        _text(upstream or ""), prompt_tokens, completion_tokens,
                        cached_tokens, "" if cost is None else f"{cost / 1e9:.9f}",
                        bool(cached), bool(estimated), latency_ms, outcome,
                    ]
                )  # fmt: skip
                count += 1
            if len(rows) < EXPORT_PAGE:
                break
            after = (rows[-1][0], rows[-1][-1])
    finally:
        await db.aclose()
    return count


EXPORT_PAGE = 5000
_EXPORTED = (
    "at, user_id, api_key_id, request_id, operation, field, model, upstream, "
    "prompt_tokens, completion_tokens, cached_tokens, cost_nano_usd, cached, "
    "estimated, latency_ms, outcome, id"
)


def _page(
    db: Database, start: datetime, end: datetime, after: tuple[object, int] | None
) -> tuple[str, list[object]]:
    """The statement and arguments of the rows after `after` (stored at, id)."""
    sql = f"SELECT {_EXPORTED} FROM ledger WHERE at >= $1 AND at < $2"  # noqa: S608
    arguments: list[object] = [db.values.time(start), db.values.time(end)]
    if after is not None:
        sql += " AND (at > $3 OR (at = $3 AND id > $4))"
        arguments += after
    return f"{sql} ORDER BY at, id LIMIT {EXPORT_PAGE}", arguments


def _text(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula: request ids come
    from clients and model names from upstreams (OWASP's CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
