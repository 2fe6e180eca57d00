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
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
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
        # The line first: what it has in flight fails rather than being sent
        # again on a new connection from the closed pool.
        await self.line.aclose()
        await self.client.aclose()  # and its connection pool, which limits shares


def _packed_by_hiredis(connection: type[Any]) -> type[Any]:
    """`connection` packing commands with hiredis, as redis-py's synchronous
    connections do: its asyncio ones pack them in Python, byte string by byte
    string (30 µs for a budget script's 22 arguments; 7 µs in C); and a
    socket's timeout read as Redis' timeout (see below)."""
    from redis.exceptions import TimeoutError as Late

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

        async def _read_response_from_parser(self, *args: Any, **kwargs: Any) -> Any:
            try:
                return await super()._read_response_from_parser(*args, **kwargs)
            except TimeoutError as error:
                # The socket's own (ETIMEDOUT: the kernel gave up on Redis).
                # Raised as Redis' timeout, as redis-py does when it times the
                # read: read without a timeout (the pipelined line's, timed by
                # its own timer), redis-py takes it for a timeout it was asked
                # for and returns None, a reply.
                raise Late(f"Timeout reading from Redis: {error}") from error

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
    for `SharedRedis.call` to judge.

    Two tasks do the work: a writer (`_write`, while asks are unsent) and a
    reader (`_read`, while replies are due). Whichever of them meets an
    error drops the connection (`_drop`): the replies still due on it can
    no longer be matched to their asks. Each connection taken has a number
    (`_generation`): a task of an earlier one knows it is done with, even
    when the pool hands the same connection object back, reconnected."""

    def __init__(self, pool: ConnectionPool) -> None:
        from redis.exceptions import ConnectionError as ConnectionLost
        from redis.exceptions import ResponseError
        from redis.exceptions import TimeoutError as Late

        self._pool = pool
        self._lost = ConnectionLost
        self._refused = ResponseError  # one command's error reply
        self._timeout = Late
        self._connection: AbstractConnection | None = None
        self._generation = 0  # of `_connection`: how many were taken
        self._unsent: list[_Ask] = []
        self._unanswered: deque[_Ask] = deque()  # sent on `_connection`, in order
        self._writing: asyncio.Task[None] | None = None
        self._reading: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # every one still running
        self._closed = False

    async def command(self, *args: Any) -> Any:
        """One command's reply (an error reply raised)."""
        (reply,) = await self.ask([args])
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def ask(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Each command's reply, in order (an error reply as its
        ResponseError, not raised)."""
        if self._closed:  # the app is shutting down: an outage to its callers
            raise self._lost("the pipelined line is closed")
        # Packed here: a value hiredis cannot pack is the asker's bug, not
        # the line's (nor the other asks').
        ask = _Ask([hiredis.pack_command(command) for command in commands])
        self._unsent.append(ask)
        if self._writing is None:
            self._writing = self._start(self._write())
        return await ask.replies

    async def aclose(self) -> None:
        """Closed for good: asks in flight fail (nothing is sent again), new
        ones fail at once, and the connection goes back to the pool closed.
        Before the pool is closed: otherwise what is in flight would be sent
        again on a new connection from the closed pool, and left open."""
        if self._closed:
            return
        self._closed = True
        # The writer and readers are told to stop before anything here
        # awaits, so that none takes or writes to a connection after this;
        # what is in flight fails first with this error (their handlers then
        # find nothing left to fail).
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        closed = self._lost("the pipelined line is closed")
        self._fail(closed)
        await self._drop(self._generation, closed, send_again=False)
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _current(self, generation: int) -> bool:
        """Whether the connection numbered `generation` is still the line's."""
        return self._connection is not None and generation == self._generation

    async def _write(self) -> None:
        """Write what is unsent, in order, until nothing is (then stop)."""
        try:
            while self._unsent:
                if self._connection is None:
                    try:
                        connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
                    except Exception as error:  # a Redis error, or a bug
                        self._fail(error)
                        continue
                    self._connection = connection
                    self._generation += 1
                connection, generation = self._connection, self._generation
                asks, self._unsent = self._unsent, []
                packed = [command for ask in asks for command in ask.commands]
                self._unanswered.extend(asks)
                try:
                    await connection.send_packed_command(packed, check_health=False)
                except Exception as error:  # a Redis error, or a bug
                    await self._drop(generation, error)
                    continue
                if self._reading is None and self._current(generation):
                    self._reading = self._start(self._read(connection, generation))
        except BaseException as error:
            # Stopped mid-way (cancelled: the line closing, the loop ending):
            # how much reached the socket is unknown, and no writer is left
            # to send the rest. All of it fails, as an outage.
            stopped = self._lost(f"the pipelined line's writer stopped: {error!r}")
            self._fail(stopped)
            await self._drop(self._generation, stopped, send_again=False)
            raise
        finally:
            if self._writing is asyncio.current_task():
                self._writing = None

    async def _read(self, connection: AbstractConnection, generation: int) -> None:
        """Hand each reply to its ask, in order, until none is awaited.

        Each reply is awaited for TIMEOUT_SECONDS at most, as the client's
        own reads are (its socket_timeout), but timed by a timer of the
        loop's that cancels this task rather than by redis-py's
        `asyncio.timeout` around each read: that was a fortieth of a cache
        hit's CPU, for its two replies. A reply late is a Redis TimeoutError,
        as redis-py's own: an outage, the unanswered asks not sent again."""
        loop = asyncio.get_running_loop()
        reader = asyncio.current_task(loop)
        assert reader is not None
        late = False

        def time_out() -> None:
            nonlocal late
            late = True
            reader.cancel()

        try:
            while self._unanswered and self._current(generation):
                ask = self._unanswered[0]
                answers = []
                for _ in ask.commands:
                    timer = loop.call_later(TIMEOUT_SECONDS, time_out)
                    try:
                        # math.inf: redis-py's read without its own timeout.
                        reply = await connection.read_response(timeout=math.inf)
                    except self._refused as refused:
                        reply = refused
                    finally:
                        timer.cancel()
                    answers.append(reply)
                if not self._current(generation):
                    return  # dropped meanwhile: its asks are another reader's
                self._unanswered.popleft()
                if not ask.replies.done():  # (its caller may have left)
                    ask.replies.set_result(answers)
        except Exception as error:  # a Redis error, or a bug: the line is dropped
            await self._drop(generation, error)
        except asyncio.CancelledError as error:
            if not late or reader.uncancel():
                await self._stopped(generation, error)
                raise
            # Our timer's cancellation alone: the reply is late.
            late_reply = (
                f"Timeout reading from Redis: no reply in {TIMEOUT_SECONDS:g} s"
            )
            await self._drop(generation, self._timeout(late_reply))
        except BaseException as error:
            await self._stopped(generation, error)
            raise
        finally:
            if self._reading is asyncio.current_task():
                self._reading = None

    async def _stopped(self, generation: int, error: BaseException) -> None:
        """The reader was cancelled (by `_drop` when the writer dropped the
        connection, by `aclose`, or from outside: the loop ending): the
        replies still due on this connection would go to the wrong asks if
        another reader went on. They fail, as an outage, and are not sent
        again (whoever stopped the reader wants the line's work stopped)."""
        stopped = self._lost(f"the pipelined line's reader stopped: {error!r}")
        await self._drop(generation, stopped, send_again=False)

    async def _drop(
        self, generation: int, error: BaseException, *, send_again: bool = True
    ) -> None:
        """The connection numbered `generation` failed: every unanswered ask
        is sent again once if it was lost (they may have run: their commands
        must be repeatable) and `send_again` (not when the line stopped), or
        fails with `error`. Done before any await, so that no ask asked
        meanwhile is written before them."""
        connection = self._connection
        if connection is None or generation != self._generation:
            return  # dropped already
        self._connection = None
        reader, self._reading = self._reading, None
        if reader is not None and reader is not asyncio.current_task():
            # It must not read on: the pool may hand this connection object
            # back, reconnected, with another reader's replies on it.
            reader.cancel()
        unanswered, self._unanswered = self._unanswered, deque()
        send_again = send_again and not self._closed and isinstance(error, self._lost)
        again = []
        for ask in unanswered:
            if send_again and not ask.sent_again:
                ask.sent_again = True
                again.append(ask)
            elif not ask.replies.done():
                ask.replies.set_exception(error)
        self._unsent = again + self._unsent
        if self._unsent and self._writing is None and not self._closed:
            self._writing = self._start(self._write())
        await connection.disconnect(nowait=True)
        await self._pool.release(connection)

    def _fail(self, error: BaseException) -> None:
        """No connection could be had, or the line stopped: what is unsent
        fails."""
        unsent, self._unsent = self._unsent, []
        for ask in unsent:
            if not ask.replies.done():
                ask.replies.set_exception(error)


class _Ask:
    __slots__ = ("commands", "replies", "sent_again")

    def __init__(self, commands: list[bytes]) -> None:  # each packed
        self.commands = commands
        self.replies: asyncio.Future[list[Any]] = (
            asyncio.get_running_loop().create_future()
        )
        self.sent_again = False
