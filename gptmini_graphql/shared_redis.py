"""The app's one Redis client, and its one policy for when Redis is unreachable.

Built by `Services` when REDIS_URL is set and closed with it (by nothing
else). The rate limits (through its connection pool: see rate_limits.py),
the response cache, persisted queries and the budgets' reservations
(spend/reservations.py) all call Redis through `SharedRedis.call`, so one
circuit knows whether Redis is up:

* the first failure opens it: logged once per outage and counted in /metrics
  (`gptmini_redis_outages_total`; `gptmini_redis_down` is 1 meanwhile);
* while it is open, calls raise `RedisUnavailable` at once, and each caller
  does without Redis as it says (limits count in memory, refuse or let
  through; the cache and persisted queries miss; callers with budgets are
  refused with BUDGET_UNAVAILABLE);
* every RETRY_SECONDS one call probes Redis (the others do not wait for it),
  and the first answer closes it, logged.

Only Redis' own errors (lost connections, timeouts, refusals) count as an
outage; any other exception is a bug and propagates as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import hiredis

from gptmini_graphql.circuit_breaker import CircuitBreaker
from gptmini_graphql.metrics import Metrics

if TYPE_CHECKING:
    from redis.asyncio import ConnectionPool, Redis
    from redis.asyncio.connection import AbstractConnection

logger = logging.getLogger("gptmini_graphql.redis")

# A command that takes longer than this is an outage: every request that
# uses Redis would wait on it otherwise.
TIMEOUT_SECONDS = 1.0
RETRY_SECONDS = 5.0
CLIENT_NAME = "gptmini-graphql"

T = TypeVar("T")


class RedisUnavailable(Exception):
    """Redis cannot be used now: it just failed, or did a moment ago."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("Redis is unreachable")
        self.retry_after = retry_after  # seconds until the next probe


class SharedRedis:
    def __init__(
        self,
        url: str,
        metrics: Metrics,
        *,
        retry_seconds: float = RETRY_SECONDS,
        timer: Callable[[], float] = time.monotonic,  # what the circuit waits by
    ) -> None:
        # Imported here: redis-py imports OpenTelemetry, which an app without
        # Redis (or tracing) need never load; and without its metrics SDK,
        # which redis-py's own (unused) metrics want: see lean_imports.py.
        from gptmini_graphql.lean_imports import REDIS_OPTIONAL, unimportable

        with unimportable(REDIS_OPTIONAL):
            import redis.asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as ConnectionLost
        from redis.exceptions import RedisError

        self.url = url
        self.client: Redis = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
            client_name=CLIENT_NAME,  # who is connected, in Redis' CLIENT LIST
            # Said here, not left to redis-py (whose clients built from a URL
            # retry nothing, those from a host ten times): a lost connection
            # (an idle one Redis closed) is tried once more, at once, on a new
            # one; a timeout is an outage as it is. A command sent again may
            # have run the first time: every budget step is idempotent by its
            # reservation's id (spend/reservations.py); a rate-limit charge
            # is not, and may then count one request twice (never fewer).
            retry=Retry(NoBackoff(), 1, (ConnectionLost,)),
        )
        # Whatever kind of connection the URL made (TCP, TLS, a Unix socket),
        # with commands packed in C (made lazily: none is open yet).
        pool = self.client.connection_pool
        pool.connection_class = _packed_by_hiredis(pool.connection_class)
        self._errors = RedisError
        # The hot paths' commands (rate limits, budgets, cache reads): each
        # written at once, one connection for all (see PipelinedLine).
        self.line = PipelinedLine(pool)
        self.metrics = metrics
        self._breaker = CircuitBreaker(1, retry_seconds, timer)
        self._down = False

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """What `operation` (which uses Redis) returns, or RedisUnavailable."""
        if not self._breaker.allow():
            raise RedisUnavailable(self._breaker.retry_after())
        try:
            result = await operation()
        except self._errors as error:
            self._lost(error)
            raise RedisUnavailable(self._breaker.retry_after()) from error
        except BaseException:
            self._breaker.released()  # cancelled, or a bug: nothing said of Redis
            raise
        self._answered()
        return result

    def _lost(self, error: Exception) -> None:
        self._breaker.failed()
        if self._down:
            return  # said once per outage, not once per probe
        self._down = True
        self.metrics.redis_lost()
        logger.warning(
            "redis unreachable; rate limits follow their outage policy, the "
            "response cache and persisted queries do without it, callers with "
            "budgets are refused",
            extra={
                "error": f"{type(error).__name__}: {error}",
                "retry_in_s": self._breaker.reset_seconds,
            },
        )

    def _answered(self) -> None:
        self._breaker.succeeded()
        if self._down:
            self._down = False
            self.metrics.redis_back()
            logger.info("redis reachable again")

    async def aclose(self) -> None:
        await self.client.aclose()  # and its connection pool, which limits shares


def _packed_by_hiredis(connection: type[Any]) -> type[Any]:
    """`connection` packing commands with hiredis, as redis-py's synchronous
    connections do: its asyncio ones pack them in Python, byte string by byte
    string (30 µs for a budget script's 22 arguments; 7 µs in C)."""

    class Packed(connection):  # type: ignore[misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            command = args
            if isinstance(args[0], str):  # "SCRIPT LOAD": two words, sent apart
                command = tuple(args[0].encode().split()) + args[1:]
            elif b" " in args[0]:
                command = tuple(args[0].split()) + args[1:]
            try:
                return [hiredis.pack_command(command)]
            except TypeError:  # a value it cannot pack: redis-py says what
                return list(super().pack_command(*args))

    Packed.__name__ = Packed.__qualname__ = f"Hiredis{connection.__name__}"
    return Packed


class PipelinedLine:
    """One connection of the pool on which each `ask` is written at once,
    without waiting for the replies of those before it: Redis runs one
    connection's commands in the order they arrive and answers in that
    order, so asks keep their order without one round trip waiting for
    another. (A pipeline of redis-py holds its connection until its replies
    are in: asks sent that way go one round trip at a time, and callers
    that wait for each other under load stay bunched together.)

    As the app's client does: a lost connection (an idle one Redis closed)
    sends what was unanswered once more, in order, on a new connection; a
    timeout is an outage as it is. An ask that fails raises the Redis error,
    for `SharedRedis.call` to judge."""

    def __init__(self, pool: ConnectionPool) -> None:
        from redis.exceptions import ConnectionError as ConnectionLost
        from redis.exceptions import ResponseError

        self._pool = pool
        self._lost = ConnectionLost
        self._refused = ResponseError  # one command's error reply
        self._connection: AbstractConnection | None = None
        self._unsent: list[_Ask] = []
        self._unanswered: deque[_Ask] = deque()
        self._writing: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[None] | None = None

    async def command(self, *args: Any) -> Any:
        """One command's reply (an error reply raised)."""
        (reply,) = await self.ask([args])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def ask(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Each command's reply, in order (an error reply as its
        ResponseError, not raised)."""
        # Packed here: a value hiredis cannot pack is the asker's bug, not
        # the line's (nor the other asks').
        ask = _Ask([hiredis.pack_command(command) for command in commands])
        self._unsent.append(ask)
        if self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write())
        return await ask.replies

    async def _write(self) -> None:
        """Write what is unsent, in order, until nothing is (then stop)."""
        try:
            while self._unsent:
                connection = self._connection
                if connection is None:
                    try:
                        connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                    except Exception as error:  # a Redis error, or a bug
                        self._fail(error)
                        continue
                    self._connection = connection
                asks, self._unsent = self._unsent, []
                packed = [command for ask in asks for command in ask.commands]
                self._unanswered.extend(asks)
                try:
                    await connection.send_packed_command(packed, check_health=False)
                except Exception as error:  # a Redis error, or a bug
                    await self._drop(connection, error)
                    continue
                if self._reading is None:
                    self._reading = asyncio.get_running_loop().create_task(
                        self._read(connection)
                    )
        finally:
            self._writing = None

    async def _read(self, connection: AbstractConnection) -> None:
        """Hand each reply to its ask, in order, until none is awaited."""
        try:
            while self._unanswered and self._connection is connection:
                ask = self._unanswered[0]
                while len(ask.answers) < len(ask.commands):
                    try:
                        reply = await connection.read_response()
                    except self._refused as refused:
                        reply = refused
                    ask.answers.append(reply)
                self._unanswered.popleft()
                if not ask.replies.done():
                    ask.replies.set_result(ask.answers)
        except Exception as error:  # a Redis error, or a bug: the line is dropped
            await self._drop(connection, error)
        finally:
            if self._connection is connection or self._connection is None:
                self._reading = None

    async def _drop(self, connection: AbstractConnection, error: Exception) -> None:
        """The connection failed: every unanswered ask is sent again once if
        it was lost (they may have run: their commands must be repeatable),
        or fails with `error`. Done before any await, so that no ask asked
        meanwhile is written before them."""
        if self._connection is not connection:
            return  # dropped already
        self._connection = None
        self._reading = None
        unanswered, self._unanswered = list(self._unanswered), deque()
        again = []
        for ask in unanswered:
            if isinstance(error, self._lost) and not ask.sent_again:
                ask.sent_again = True
                ask.answers.clear()
                again.append(ask)
            elif not ask.replies.done():
                ask.replies.set_exception(error)
        self._unsent = again + self._unsent
        if self._unsent and self._writing is None:
            self._writing = asyncio.get_running_loop().create_task(self._write())
        await connection.disconnect(nowait=True)
        await self._pool.release(connection)

    def _fail(self, error: Exception) -> None:
        """No connection could be had: what is unsent fails."""
        unsent, self._unsent = self._unsent, []
        for ask in unsent:
            if not ask.replies.done():
                ask.replies.set_exception(error)


class _Ask:
    __slots__ = ("answers", "commands", "replies", "sent_again")

    def __init__(self, commands: list[bytes]) -> None:  # each packed
        self.commands = commands
        self.answers: list[Any] = []
        self.replies: asyncio.Future[list[Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self.sent_again = False
