"""The usage ledger, through GraphQL and the CLI: one row per model call
(streams included, however they end), cached answers at cost 0, totals that
add up exactly, breakdowns by each group, retention and CSV export."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import make_url

from gptmini_graphql.__main__ import main
from gptmini_graphql.db.values import Values
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.spend.ledger import Entry, Ledger
from tests.conftest import API, Clock, error_codes, postgres_url
from tests.db.test_outage import _connections
from tests.fake_upstream import FakeUpstream, Reply, api_error
from tests.spend.helpers import by_key, usage
from tests.test_subscriptions import SLOW, eventually, transport_ws

# The fake upstream's default answer: 100 prompt and 20 completion tokens of
# gpt-4o-mini, $0.15 and $0.60 per million: 27,000 nano-dollars.
CALL_USD = (100 * 0.15 + 20 * 0.60) / 1e6
TASKS = [
    '{ summarize(text: "A long text about buses.") { text } }',
    '{ translate(text: "Hello", targetLanguage: "fr", sourceLanguage: "en") { text } }',
    '{ complete(prompt: "Hi") { text } }',
    '{ analyze(text: "Great!") { sentiment } }',
]


def test_each_task_writes_one_row_and_the_totals_add_up(
    make_api: Callable[..., API], database_url: str
) -> None:
    api = make_api(database_url=database_url)
    token = api.login()
    for query in TASKS:
        assert "errors" not in api.post(query, token=token)

    report = usage(api, token, "FIELD")
    assert report["requests"] == 4
    assert report["cachedAnswers"] == 0
    assert (report["promptTokens"], report["completionTokens"]) == (400, 80)
    assert report["costUsd"] == pytest.approx(4 * CALL_USD, abs=1e-12)
    lines = by_key(report)
    assert set(lines) == {"summarize", "translate", "complete", "analyze"}
    assert all(line["requests"] == 1 for line in lines.values())
    assert sum(line["costUsd"] for line in lines.values()) == pytest.approx(
        report["costUsd"], abs=1e-12
    )


def test_a_cached_answer_is_a_row_at_cost_zero(make_api: Callable[..., API]) -> None:
    api = make_api(cache_ttl_seconds=60)
    token = api.login()
    query = TASKS[0]
    first = api.post(
        query.replace("{ text }", "{ cached usage { costUsd } }"), token=token
    )
    second = api.post(
        query.replace("{ text }", "{ cached usage { costUsd } }"), token=token
    )
    assert second["data"]["summarize"] == {"cached": True, "usage": {"costUsd": 0.0}}
    assert first["data"]["summarize"]["cached"] is False

    report = usage(api, token)
    assert (report["requests"], report["cachedAnswers"]) == (2, 1)
    # Tokens and cost are the one call the upstream answered.
    assert (report["promptTokens"], report["completionTokens"]) == (100, 20)
    assert report["costUsd"] == pytest.approx(CALL_USD, abs=1e-12)


def test_a_refused_call_is_a_row_at_no_cost(
    make_api: Callable[..., API], upstream: FakeUpstream
) -> None:
    api = make_api()
    token = api.login()
    upstream.queue(api_error(400, "bad request"))
    assert error_codes(api.post(TASKS[2], token=token)) == ["UPSTREAM_ERROR"]
    report = usage(api, token)
    assert report["requests"] == 1
    assert report["costUsd"] == 0
    assert report["promptTokens"] == 0


def test_a_stream_writes_its_row_with_the_upstreams_usage(
    make_api: Callable[..., API],
) -> None:
    api = make_api()
    token = api.login()
    with transport_ws(api, token) as ws:
        ws.subscribe("1")
        while ws.receive()["type"] != "complete":
            pass
    report = usage(api, token)
    assert report["requests"] == 1
    # The fake upstream streams 3 chunks and reports 10 prompt tokens.
    assert (report["promptTokens"], report["completionTokens"]) == (10, 3)


def test_a_cancelled_stream_is_charged_its_reservation_never_zero(
    make_api: Callable[..., API], upstream: FakeUpstream
) -> None:
    api = make_api()
    token = api.login()
    upstream.queue(SLOW)
    with transport_ws(api, token) as ws:
        ws.subscribe("1", {"prompt": "Tell me a story.", "maxTokens": 100})
        assert ws.receive()["type"] == "next"
        ws.complete("1")
        eventually(lambda: upstream.disconnects == 1, "upstream left open")
    eventually(lambda: usage(api, token)["requests"] == 1, "no ledger row")
    report = usage(api, token)
    # No usage chunk came: the worst case, maxTokens completion tokens.
    assert report["completionTokens"] == 100
    assert report["promptTokens"] >= len("Tell me a story.")
    assert report["costUsd"] > 0


def test_a_stream_without_a_usage_chunk_is_charged_its_reservation(
    make_api: Callable[..., API], upstream: FakeUpstream
) -> None:
    api = make_api()
    token = api.login()
    upstream.queue(Reply(stream_usage=False))
    with transport_ws(api, token) as ws:
        ws.subscribe("1", {"prompt": "Tell me a story.", "maxTokens": 50})
        while ws.receive()["type"] != "complete":
            pass
    report = usage(api, token)
    assert report["completionTokens"] == 50
    assert report["costUsd"] > 0


def test_an_unpriced_stream_without_usage_is_an_unpriced_row(
    make_api: Callable[..., API], upstream: FakeUpstream
) -> None:
    api = make_api(openai_model="a-model-without-a-price")
    token = api.login()
    upstream.queue(Reply(stream_usage=False))
    with transport_ws(api, token) as ws:
        ws.subscribe("1", {"prompt": "Tell me a story.", "maxTokens": 50})
        while ws.receive()["type"] != "complete":
            pass
    report = api.post(
        "{ me { usage { requests unpricedRequests costUsd completionTokens } } }",
        token=token,
    )["data"]["me"]["usage"]
    # Its tokens are the reservation's; its cost unknown, not a priced $0.
    assert report == {
        "requests": 1,
        "unpricedRequests": 1,
        "costUsd": 0,
        "completionTokens": 50,
    }


BREAKDOWN = """
query Usage($by: UsageGroup!) {
  usage { requests costUsd breakdown(by: $by) { key requests costUsd } }
}
"""
CREATE_KEY = 'mutation { createApiKey(name: "script") { key apiKey { id } } }'


def test_usage_breaks_down_by_every_group(
    make_api: Callable[..., API], database_url: str
) -> None:
    api = make_api(database_url=database_url)
    admin = api.login()
    created = api.post(CREATE_KEY, token=admin)["data"]["createApiKey"]
    key, key_id = created["key"], created["apiKey"]["id"]
    api.post(
        'mutation { createUser(username: "bo", password: "long enough pw") { id } }',
        token=admin,
    )
    bo = api.login("bo", "long enough pw")
    api.post("query Sum " + TASKS[0], token=admin)
    api.post("query Sum " + TASKS[0], token=key)
    api.post(TASKS[2], token=bo)

    mine = by_key(usage(api, admin, "API_KEY"))
    assert {k: v["requests"] for k, v in mine.items()} == {None: 1, key_id: 1}
    mine = by_key(usage(api, admin, "OPERATION"))
    assert {k: v["requests"] for k, v in mine.items()} == {"Sum": 2}
    mine = by_key(usage(api, admin, "MODEL"))
    assert {k: v["requests"] for k, v in mine.items()} == {"gpt-4o-mini-2024-07-18": 2}
    (day,) = by_key(usage(api, admin, "DAY"))
    assert len(day) == 10 and day[4] == "-"

    everyone = api.post(BREAKDOWN, {"by": "USER"}, token=admin)["data"]["usage"]
    assert everyone["requests"] == 3
    assert sorted(line["requests"] for line in everyone["breakdown"]) == [1, 2]
    assert sum(line["costUsd"] for line in everyone["breakdown"]) == pytest.approx(
        everyone["costUsd"], abs=1e-12
    )
    refused = api.post(BREAKDOWN, {"by": "DAY"}, token=bo)
    assert error_codes(refused) == ["FORBIDDEN"]


def test_a_period_is_from_inclusive_to_exclusive(api: API, token: str) -> None:
    api.post(TASKS[2], token=token)
    query = """query P($from: DateTime, $to: DateTime) {
      me { usage(from: $from, to: $to) { requests } } }"""
    past = {"from": "2020-01-01T00:00:00Z", "to": "2020-02-01T00:00:00Z"}
    assert api.post(query, past, token=token)["data"]["me"]["usage"]["requests"] == 0
    backwards = {"from": "2020-02-01T00:00:00Z", "to": "2020-01-01T00:00:00Z"}
    assert error_codes(api.post(query, backwards, token=token)) == ["BAD_USER_INPUT"]


def test_rows_export_as_csv_and_prune_by_retention(
    make_api: Callable[..., API],
    tmp_path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    url = f"sqlite:///{tmp_path}/ledger.sqlite3"
    clock = Clock()
    clock.advance(-100 * 24 * 3600)  # rows of a past month, which prune may delete
    api = make_api(database_url=url, cache_ttl_seconds=60, clock=clock)
    token = api.login()
    api.post(TASKS[0], token=token)
    # A request id a spreadsheet would read as a formula (it is a valid id).
    api.post(TASKS[0], token=token, headers={"X-Request-ID": "-1-1"})
    api.stop()  # a clean shutdown writes the queued rows
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_URL", url)

    assert main(["usage", "export", "--from", "2000-01-01", "--to", "2100-01-01"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [row["cached"] for row in rows] == ["False", "True"]
    assert rows[0]["cost_usd"] == f"{CALL_USD:.9f}"
    assert rows[1]["cost_usd"] == "0.000000000"
    assert {row["field"] for row in rows} == {"summarize"}
    assert rows[1]["request_id"] == "'-1-1"  # shown as text, never run

    assert main(["usage", "prune"]) == 0  # 400 days: nothing that old
    assert "deleted 0" in capsys.readouterr().out
    # Not this month's rows: its budgets are counted from them.
    assert main(["usage", "prune", "--before", "2100-01-01"]) == 2
    assert "--before must not be later than" in capsys.readouterr().err
    month_ago = datetime.now(UTC) - timedelta(days=31)
    assert main(["usage", "prune", "--before", f"{month_ago:%Y-%m-%d}"]) == 0
    assert "deleted 2" in capsys.readouterr().out
    assert main(["usage", "export", "--from", "2100-01-01", "--to", "2000-01-01"]) == 2


def test_retention_keeps_at_least_a_month(make_api: Callable[..., API]) -> None:
    """A month's budgets are seeded from its rows: pruning them would start
    those budgets again."""
    with pytest.raises(ValueError, match="ledger_retention_days"):
        make_api(ledger_retention_days=30)


def _metric(api: API, name: str) -> float:
    text = api.client.get("/metrics").text
    (line,) = [x for x in text.splitlines() if x.startswith(name + " ")]
    return float(line.split()[1])


def test_metrics_count_the_rows_written_and_dropped(api: API, token: str) -> None:
    written = _metric(api, "gptmini_ledger_rows_written_total")
    dropped = _metric(api, "gptmini_ledger_rows_dropped_total")
    api.post(TASKS[2], token=token)
    usage(api, token)  # reading usage writes this server's queued rows first
    assert _metric(api, "gptmini_ledger_rows_written_total") == written + 1
    assert _metric(api, "gptmini_ledger_rows_dropped_total") == dropped


@pytest.mark.skipif(postgres_url() is None, reason="DATABASE_URL names no PostgreSQL")
def test_rows_wait_through_a_database_outage_and_are_written_after(
    make_api: Callable[..., API], postgres_databases: Callable[[], str], capfd
) -> None:
    url = postgres_databases()
    api = make_api(database_url=url)
    token = api.login()  # its session is cached: calls go on during the outage
    assert "errors" not in api.post(TASKS[2], token=token)
    name = make_url(url).database
    _connections(name, allowed=False)
    try:
        assert "errors" not in api.post(TASKS[2], token=token)
        time.sleep(1.5)  # a write of the ledger fails meanwhile
    finally:
        _connections(name, allowed=True)
    assert "could not write the usage ledger" in capfd.readouterr().err
    assert usage(api, token)["requests"] == 2  # both rows, once each
    assert _metric(api, "gptmini_ledger_rows_dropped_total") == 0


class _CommitInFlight:
    """A database whose COMMIT is kept (the rows are the database's) before
    its reply comes back: the reply waits for `reply`."""

    def __init__(self) -> None:
        self.values = Values()
        self.kept: list[tuple[object, ...]] = []
        self.committing = asyncio.Event()
        self.reply = asyncio.Event()

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Any]:
        written: list[tuple[object, ...]] = []

        class Transaction:
            async def executemany(self, sql: str, rows: list[Any]) -> None:
                written.extend(rows)

        yield Transaction()
        self.kept.extend(written)  # committed, whatever happens to the reply
        self.committing.set()
        await self.reply.wait()


def test_a_flush_cancelled_while_its_commit_is_in_flight_writes_each_row_once() -> None:
    async def scenario() -> int:
        db = _CommitInFlight()
        ledger = Ledger(db, Metrics())  # type: ignore[arg-type]
        ledger.record(
            Entry(
                at=datetime.now(UTC),
                user_id=uuid.uuid4(),
                api_key_id=None,
                request_id="r1",
                operation=None,
                field="summarize",
                model="gpt-4o-mini",
                upstream="openai",
                prompt_tokens=100,
                completion_tokens=20,
                cached_tokens=0,
                cost_nano_usd=27_000,
                cached=False,
                estimated=False,
                latency_ms=5,
                outcome="OK",
            )
        )
        # A reader's flush (or the loop's, at shutdown) cancelled mid-commit...
        reader = asyncio.create_task(ledger.flush())
        await db.committing.wait()
        reader.cancel()
        await asyncio.sleep(0)
        db.reply.set()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        await ledger.flush()  # ...and the next flush, as aclose's
        return len(db.kept)

    assert asyncio.run(scenario()) == 1
