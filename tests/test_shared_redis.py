"""One Redis client per app, and one view of whether Redis is up: a Redis of
the test's own, watched from outside (CLIENT LIST) and taken down mid-test.
Rate limits, the response cache, persisted queries and budgets all use it."""

from __future__ import annotations

import asyncio
import gc
import time
import uuid
import warnings

import pytest

from gptmini_graphql.logging import configure_logging
from gptmini_graphql.metrics import Metrics
from gptmini_graphql.shared_redis import (
    CLIENT_NAME,
    PipelinedLine,
    RedisUnavailable,
    SharedRedis,
)
from tests.redis_server import RedisServer
from tests.test_persisted_queries import extensions

HELLO = "query Hello { __typename }"


def _connections(server: RedisServer) -> list[str]:
    """The names of the clients connected to `server`, besides the one asking."""
    import redis

    client = redis.Redis(port=server.port, socket_timeout=1, client_name="test")
    try:
        return [c["name"] for c in client.client_list() if c["name"] != "test"]
    finally:
        client.close()


def test_limits_cache_persisted_queries_and_budgets_share_one_connection(
    make_api, redis_server: RedisServer
) -> None:
    user = {"fake_username": f"user-{uuid.uuid4().hex[:8]}", "fake_password": "pw"}
    api = make_api(
        redis_url=redis_server.url,
        cache_ttl_seconds=60,
        budget_usd_per_day=1.0,  # every call reserved in Redis
        **user,
    )
    token = api.login(user["fake_username"], "pw")  # the login limits
    for _ in range(2):  # the rate limit, and the cache: a miss, then a hit
        result = api.post('{ summarize(text: "one pool") { cached } }', token=token)
        assert "errors" not in result, result
    body = {"query": HELLO, "extensions": extensions(HELLO)}  # a registration
    headers = {"Authorization": f"Bearer {token}"}
    assert api.client.post("/graphql", json=body, headers=headers).status_code == 200

    stored = [key.decode() for key in list(redis_server.keys())]
    prefixes = ("gptmini:cache:", "gptmini:apq:", "gptmini:{LIMITER/", "gptmini:spend:")
    for prefix in prefixes:  # all
        assert any(key.startswith(prefix) for key in stored), (prefix, stored)
    # Every connection is from the app's one pool (limits makes none of its own)...
    assert set(_connections(redis_server)) == {CLIENT_NAME}
    api.stop()
    assert _connections(redis_server) == []  # ... and closed with the app


def test_a_bug_is_not_an_outage(redis_server: RedisServer, capfd) -> None:
    configure_logging("INFO")  # writing to this test's stderr

    async def scenario() -> None:
        redis = SharedRedis(redis_server.url, Metrics())
        try:

            async def bug() -> None:
                raise TypeError("not Redis' fault")

            with pytest.raises(TypeError):
                await redis.call(bug)
            assert await redis.call(redis.client.ping)  # still in use
            redis_server.kill()
            for _ in range(3):
                with pytest.raises(RedisUnavailable):
                    await redis.call(redis.client.ping)
        finally:
            await redis.aclose()

    asyncio.run(scenario())
    log = capfd.readouterr().err
    assert log.count("redis unreachable") == 1  # once per outage
    assert "not Redis' fault" not in log


def test_budgets_use_the_apps_client_and_leave_it_open(
    redis_server: RedisServer, tmp_path
) -> None:
    from gptmini_graphql.db.database import Database
    from gptmini_graphql.settings import Settings
    from gptmini_graphql.spend.enforcement import Spend
    from gptmini_graphql.spend.ledger import Ledger
    from gptmini_graphql.spend.redis_reservations import RedisReservations

    async def scenario() -> None:
        settings = Settings(
            _env_file=None, database_url=f"sqlite:///{tmp_path}/spend.sqlite3"
        )
        db = Database(settings.database_url)
        metrics = Metrics()
        redis = SharedRedis(redis_server.url, metrics)
        try:
            spend = Spend(
                settings, RedisReservations(redis), Ledger(db, metrics), db, metrics
            )
            await spend.aclose()
            assert await redis.call(redis.client.ping)  # the app's, still open
            assert set(_connections(redis_server)) == {CLIENT_NAME}
        finally:
            await redis.aclose()
            await db.aclose()

    asyncio.run(scenario())
    assert _connections(redis_server) == []


def test_the_line_answers_each_ask_in_the_order_asked(
    redis_server: RedisServer,
) -> None:
    """Asks from many tasks at once, none waiting for another's reply: Redis
    runs them in the order asked, each gets its own replies (an error reply
    as its error), and a lost connection sends the unanswered ones again."""
    from redis.exceptions import ResponseError

    async def scenario() -> None:
        redis = SharedRedis(redis_server.url, Metrics())
        line = redis.line
        try:

            async def incr(times: int) -> list[int]:
                return await line.ask([("INCR", "n")] * times)

            replies = await asyncio.gather(*(incr(1 + i % 3) for i in range(300)))
            assert [n for reply in replies for n in reply] == list(range(1, 601))
            wrong = await line.ask([("INCR", "n"), ("HGET", "n", "f"), ("GET", "n")])
            assert wrong[0] == 601 and wrong[2] == b"601"
            assert isinstance(wrong[1], ResponseError)  # WRONGTYPE, for it alone
            with pytest.raises(ResponseError):
                await line.command("HGET", "n", "f")
            # Redis closes the line's connection: sent again on a new one.
            await redis.client.client_kill_filter(_type="normal", skipme=True)
            assert await line.command("INCR", "n") == 602
        finally:
            await redis.aclose()

    asyncio.run(scenario())
    assert _connections(redis_server) == []  # closed with the app's client


async def _written(line: PipelinedLine) -> None:
    """Until the ask just made is written (its reply then awaited)."""
    await asyncio.sleep(0)  # the asking task runs: it starts the writer
    assert line._writing is not None
    await line._writing  # which stops once nothing is left unsent


def test_closing_fails_what_the_line_has_in_flight(redis_server: RedisServer) -> None:
    """Closed with asks in flight (the app shutting down mid-request): they
    fail as an outage, are not sent again on a new connection, and the line
    leaves no connection open."""
    from redis.exceptions import ConnectionError as ConnectionLost

    async def scenario() -> None:
        redis = SharedRedis(redis_server.url, Metrics())
        line = redis.line
        await line.command("SET", "k", "v")
        # Its reply is due only when BLPOP gives up: in flight at close.
        blocked = asyncio.create_task(line.ask([("BLPOP", "none", "5"), ("GET", "k")]))
        await _written(line)
        await redis.aclose()
        with pytest.raises(ConnectionLost, match="closed"):
            await asyncio.wait_for(blocked, 10)  # (a hang, not a time, fails)
        with pytest.raises(ConnectionLost, match="closed"):
            await line.command("GET", "k")
        with pytest.raises(RedisUnavailable):  # as callers see it
            await redis.call(lambda: line.command("GET", "k"))
        assert not line._tasks  # its writer and reader awaited

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        asyncio.run(scenario())
        gc.collect()  # an unclosed socket or transport warns when collected
    assert [w.message for w in caught if w.category is ResourceWarning] == []
    assert _connections(redis_server) == []


def test_a_cancelled_reader_hands_no_reply_to_the_wrong_ask(
    redis_server: RedisServer,
) -> None:
    """The line's reader cancelled from outside (a loop ending, a task group)
    with a reply still due: its ask fails as an outage, and the next ask gets
    its own reply on a new connection, not the one left due on the old."""
    from redis.exceptions import ConnectionError as ConnectionLost

    async def scenario() -> None:
        redis = SharedRedis(redis_server.url, Metrics())
        line = redis.line
        try:
            await line.command("SET", "b", "B")
            blocked = asyncio.create_task(line.command("BLPOP", "none", "1"))
            await _written(line)
            assert line._reading is not None
            line._reading.cancel()
            with pytest.raises(ConnectionLost, match="reader stopped"):
                await asyncio.wait_for(blocked, 10)
            assert await line.command("GET", "b") == b"B"
        finally:
            await redis.aclose()

    asyncio.run(scenario())
    assert _connections(redis_server) == []


def test_a_late_reply_is_an_outage_and_the_line_goes_on(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply not in within TIMEOUT_SECONDS fails its ask as Redis' own
    timeout (an outage, as callers see it), and the next ask gets its own
    reply on a new connection, not the late one."""
    from redis.exceptions import TimeoutError as Late

    from gptmini_graphql import shared_redis

    monkeypatch.setattr(shared_redis, "TIMEOUT_SECONDS", 0.2)

    async def scenario() -> None:
        redis = SharedRedis(redis_server.url, Metrics())
        line = redis.line
        try:
            await line.command("SET", "k", "v")
            started = time.monotonic()
            with pytest.raises(Late):
                await line.ask([("BLPOP", "none", "1"), ("GET", "k")])
            assert time.monotonic() - started < 0.9  # not BLPOP's second
            assert await line.command("GET", "k") == b"v"
            with pytest.raises(RedisUnavailable):
                await redis.call(lambda: line.command("BLPOP", "none", "1"))
            assert await line.command("GET", "k") == b"v"
        finally:
            await redis.aclose()

    asyncio.run(scenario())
    assert _connections(redis_server) == []


def test_a_socket_timed_out_is_an_outage_not_a_reply(
    redis_server: RedisServer,
) -> None:
    """A read the kernel ends with ETIMEDOUT (retransmissions or keepalive
    given up: Python's TimeoutError, from the socket, not from a timer)
    fails its ask as Redis' TimeoutError, an outage, as it did when
    redis-py timed each read; never a reply of None (a miss, a limit or a
    budget step read as answered)."""
    import errno
    import os

    from redis.exceptions import TimeoutError as Late

    async def scenario() -> None:
        redis = SharedRedis(redis_server.url, Metrics())
        line = redis.line
        try:
            await line.command("SET", "k", "v")
            asked = asyncio.create_task(
                line.ask([("BLPOP", "none", "1"), ("GET", "k")])
            )
            await _written(line)
            assert line._connection is not None
            # What asyncio's transport does when recv() fails so.
            timed_out = TimeoutError(errno.ETIMEDOUT, os.strerror(errno.ETIMEDOUT))
            line._connection._reader.set_exception(timed_out)
            with pytest.raises(Late):
                await asyncio.wait_for(asked, 10)
            assert await line.command("GET", "k") == b"v"  # on a new connection
        finally:
            await redis.aclose()

    asyncio.run(scenario())
    assert _connections(redis_server) == []
