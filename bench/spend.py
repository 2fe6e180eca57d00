"""`python -m bench --only spend`: what budgets cost and whether they hold.

* CPU per summarize (a cache miss) on our server without budgets (the ledger
  only), with budgets in memory, and with budgets in Redis (REDIS_URL): the
  reservation's and the ledger's cost per request. With `--before REF`, the
  server at REF (no ledger at all) too: `cpu_per_req_*_vs_before`.
* The concurrency proof, larger than CI's: two replicas sharing Redis and a
  database (PostgreSQL if DATABASE_URL names one, else a SQLite file), a
  budget of exactly k worst-case calls, 20·k concurrent calls split across
  them: admitted, refused, ledger rows, over-spend (target 0).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from bench.databases import drop, fresh_database
from bench.load import http_request
from bench.registry import http_load, summary_check
from bench.rig import BUDGETS, Rig
from bench.servers import API_ARGV, ServerFailed, http_json, login
from bench.workload import SUMMARIZE_QUERY, TEXT, graphql_body

PROOF_CALL = '{ complete(prompt: "Count to three.", maxTokens: 40) { text } }'


def servers(rig: Rig) -> list[tuple[str, object, str]]:
    """(variant, server, token) for each variant that can run here."""
    upstream = {
        "OPENAI_BASE_URL": rig.upstream().url + "/v1",
        "OPENAI_API_KEY": "bench",
    }
    # Budgets far above what the bench spends: every request reserves and settles.
    budgets = dict(BUDGETS)
    found = []
    plans = [
        ("ledger", {"REDIS_URL": None}),
        ("budgets-memory", {**budgets, "REDIS_URL": None}),
    ]
    if os.environ.get("REDIS_URL"):
        plans.append(
            ("budgets-redis", {**budgets, "REDIS_URL": os.environ["REDIS_URL"]})
        )
        plans.insert(1, ("ledger-redis", {"REDIS_URL": os.environ["REDIS_URL"]}))
    for name, env in plans:
        cwd = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        server = rig.start(
            f"spend-{name}", API_ARGV, env=rig.api_env({**upstream, **env}), cwd=cwd
        )
        found.append((name, server, login(server.port)))
    if rig.before_ref:
        found.insert(0, ("before", rig.before(), rig.before_token))
    return found


def cpu_rows(rig: Rig, options) -> list[dict]:
    body = graphql_body(SUMMARIZE_QUERY, {"text": TEXT})
    variants = servers(rig)
    rows = []
    for round_ in range(1, options.rounds + 1):
        shift = (round_ - 1) % len(variants)
        for variant, server, token in variants[shift:] + variants[:shift]:
            headers = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                "Cache-Control": "no-store",
            }
            request = http_request("POST", "/graphql", server.port, body, headers)
            rows += [
                {"variant": variant, "round": round_, **row}
                for row in http_load(rig, options, server, request, summary_check)
            ]
    return rows


def proof_row(options) -> dict:
    """Two replicas, k worst cases of budget, 20·k concurrent calls."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        return {"variant": "proof", "concurrency": 0, "note": "needs REDIS_URL"}
    from tests.spend.replicas import Replica, Upstream  # the CI proof's own parts

    k = 5 if options.quick else 25
    work = Path(tempfile.mkdtemp(prefix="bench-proof-"))
    database = fresh_database(work, "proof")
    upstream = Upstream()
    env = {
        "DATABASE_URL": database,
        "REDIS_URL": redis_url,
        "OPENAI_BASE_URL": upstream.url,
        "LOG_LEVEL": "WARNING",
    }
    replicas = [Replica(env, work, f"proof{i}") for i in range(2)]
    try:
        for replica in replicas:
            replica.wait_started()
        token = replicas[0].login()
        worst = _worst_case(replicas, token)
        _set_budget(replicas[0].port, token, k * worst)
        started = time.perf_counter()
        outcomes = asyncio.run(_fire([r.port for r in replicas], token, 20 * k))
        seconds = time.perf_counter() - started
    finally:
        for replica in replicas:
            replica.stop()
        upstream.close()
    try:
        rows, total_nano = _ledger(database)
    finally:
        drop(database)
    budget_nano = round(k * worst * 1e9)
    admitted = outcomes.count("ok")
    return {
        "variant": "proof",
        "concurrency": 20 * k,
        "requests": len(outcomes),
        "failures": sum(1 for o in outcomes if o not in ("ok", "BUDGET_EXCEEDED")),
        "k": k,
        "admitted": admitted,
        "refused": outcomes.count("BUDGET_EXCEEDED"),
        "ledger_rows": rows,
        "overspend_usd": max(total_nano - budget_nano, 0) / 1e9,
        "ledger_usd": total_nano / 1e9,
        "budget_usd": budget_nano / 1e9,
        "proof_s": round(seconds, 2),
        "database": database.split(":", 1)[0],
    }


def _graphql(port: int, token: str, query: str, variables: dict | None = None) -> dict:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    status, answer = http_json(
        port, "POST", "/graphql", graphql_body(query, variables or {}), headers
    )
    if status != 200:
        raise ServerFailed(f"{status} {answer}")
    return answer


SET_BUDGET = """mutation S($usd: Float!) {
  setBudgets(username: "test_user", budgets: {usdPerDay: $usd}) { id } }"""


def _set_budget(port: int, token: str, usd: float) -> None:
    answer = _graphql(port, token, SET_BUDGET, {"usd": usd})
    if answer.get("errors"):
        raise ServerFailed(f"setBudgets: {answer}")


def _worst_case(replicas, token: str) -> float:
    _set_budget(replicas[0].port, token, 0)
    answer = _graphql(replicas[1].port, token, PROOF_CALL)
    return answer["errors"][0]["extensions"]["requested"]


async def _fire(ports: list[int], token: str, count: int) -> list[str]:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=120) as client:

        async def one(index: int) -> str:
            url = f"http://127.0.0.1:{ports[index % len(ports)]}/graphql"
            answer = (
                await client.post(url, json={"query": PROOF_CALL}, headers=headers)
            ).json()
            errors = answer.get("errors")
            return errors[0]["extensions"]["code"] if errors else "ok"

        return await asyncio.gather(*(one(i) for i in range(count)))


def _ledger(database: str) -> tuple[int, int]:
    query = "SELECT count(*), coalesce(sum(cost_nano_usd), 0) FROM ledger"
    if database.startswith("sqlite"):
        with sqlite3.connect(database.removeprefix("sqlite:///")) as connection:
            count, total = connection.execute(query).fetchone()
            return int(count), int(total)
    import asyncpg

    async def read() -> tuple[int, int]:
        connection = await asyncpg.connect(database)
        try:
            row = await connection.fetchrow(query)
        finally:
            await connection.close()
        return int(row[0]), int(row[1])

    return asyncio.run(read())


def summary(rows: list[dict]) -> dict[str, float]:
    """Added CPU per request: each variant's median against `ledger` (and
    against `before`, the server without a ledger, when measured)."""
    import statistics

    def median(variant: str, level: int) -> float | None:
        values = [
            r["server_cpu_ms_per_req"]
            for r in rows
            if r.get("variant") == variant
            and r.get("concurrency") == level
            and r.get("server_cpu_ms_per_req")
        ]
        return statistics.median(values) if values else None

    ratios: dict[str, float] = {}
    levels = {r["concurrency"] for r in rows if r.get("variant") != "proof"}
    for level in sorted(levels):
        base = {
            name: median(name, level) for name in ("before", "ledger", "ledger-redis")
        }
        for variant in ("ledger", "ledger-redis", "budgets-memory", "budgets-redis"):
            ours = median(variant, level)
            for against, reference in base.items():
                if ours is None or reference is None or against == variant:
                    continue
                if variant.startswith("ledger") and against != "before":
                    continue
                ratios[f"spend_{variant}_vs_{against}_ratio@c{level}"] = round(
                    ours / reference, 3
                )
                ratios[f"spend_{variant}_vs_{against}_extra_ms@c{level}"] = round(
                    ours - reference, 3
                )
    return ratios


def micro_rows(calls: int = 3000) -> list[dict]:
    """The accounting alone, in this process, without HTTP around it: CPU
    per call of the ledger row (queued and written in batches) and of a
    reservation plus its settlement against four budgets, in memory and in
    Redis. On a busy machine this is steadier than the servers' figures,
    whose noise is larger than the effect."""
    import uuid as uuid_

    from gptmini_graphql.db.database import Database
    from gptmini_graphql.llm.answers import TokenUsage
    from gptmini_graphql.metrics import Metrics
    from gptmini_graphql.settings import Settings
    from gptmini_graphql.shared_redis import SharedRedis
    from gptmini_graphql.spend.enforcement import Caller, Left, Spend
    from gptmini_graphql.spend.ledger import Ledger
    from gptmini_graphql.spend.meter import Meter
    from gptmini_graphql.spend.redis_reservations import RedisReservations
    from gptmini_graphql.spend.reservations import MemoryReservations

    body = {"messages": [{"role": "user", "content": TEXT}], "max_tokens": 316}
    usage = TokenUsage(180, 27, 128, 0.0000369)
    budgets = {
        "budget_usd_per_day": 1e6,
        "budget_usd_per_month": 1e6,
        "budget_tokens_per_month": 2_000_000_000,
        "token_rate_limit": 2_000_000_000,
    }

    async def measure(name: str, store_kind: str | None) -> dict:
        work = Path(tempfile.mkdtemp(prefix="bench-micro-"))
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite:///{work}/micro.sqlite3",
            **(budgets if store_kind else {}),
        )
        db = Database(settings.database_url)
        await db.migrate()
        metrics = Metrics()
        shared = None
        if store_kind == "redis":
            shared = SharedRedis(os.environ["REDIS_URL"], metrics)  # the app's kind
            store = RedisReservations(shared)
        else:
            store = MemoryReservations()
        ledger = Ledger(db, metrics)
        ledger.start()
        spend = Spend(settings, store, ledger, db, metrics)
        caller = Caller(uuid_.uuid4(), None, {}, None)
        price = settings.model_prices["gpt-4o-mini"]

        async def one() -> None:
            meter = Meter(
                spend,
                caller,
                request_id="r",
                operation=None,
                field="summarize",
                left=Left(),
            )
            hold = await meter.reserve(body, price)
            await meter.settle(
                hold, model="gpt-4o-mini", upstream="primary", usage=usage, outcome="OK"
            )

        for _ in range(200):  # warm up: counters seeded, scripts loaded
            await one()
        await ledger.flush()
        started = time.process_time()
        for index in range(calls):
            await one()
            if index % 500 == 499:
                await ledger.flush()  # what the writer task does each second
        await ledger.flush()
        cpu = time.process_time() - started
        await spend.aclose()
        if shared is not None:
            await shared.aclose()
        await db.aclose()
        return {
            "variant": f"micro-{name}",
            "concurrency": 1,
            "requests": calls,
            "failures": 0,
            "accounting_cpu_ms_per_req": round(cpu / calls * 1000, 4),
        }

    plans = [("ledger", None), ("budgets-memory", "memory")]
    if os.environ.get("REDIS_URL"):
        plans.append(("budgets-redis", "redis"))
    return [asyncio.run(measure(name, kind)) for name, kind in plans]
