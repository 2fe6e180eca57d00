"""Reservations in Redis (reservations.py says what each step means): one
Lua function per step, exact across every process that shares the Redis.

The steps of this process go to Redis in the order they were asked for:
those asked in one turn of the event loop in one round trip, sent at once
on the app's pipelined line (shared_redis.py), which does not wait for the
replies of round trips still in flight yet keeps their order; each user's
steps in that round trip in one script call (`_STEPS`, which runs them in
order): under load one command carries the reserves and settles of many
calls, each of which would otherwise cost a command to pack, send and parse.
(Round trips that waited for each other bunched 64 concurrent callers into
one, answered at one instant: they then went upstream, came back and were
served together, again and again.)

A settle is not waited for: the call's answer goes out at once, and the
settle goes with this process's next step (a reserve, usually), or alone
after SETTLE_WAIT_SECONDS: alone, a call pays for one round trip, not two.
It always reaches Redis before any later step of this process (so this
process's next reserve sees it). Until it lands the call's reservation
still holds its worst case: charged more for a moment, never less. A
settle that cannot reach Redis leaves the reservation to expire, as
before; `drain` (at shutdown) sends and waits for the last ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from gptmini_graphql.shared_redis import RedisUnavailable
from gptmini_graphql.spend.budgets import Budget
from gptmini_graphql.spend.reservations import KEEP_SECONDS, SETTLED_SECONDS, Verdict

if TYPE_CHECKING:
    from gptmini_graphql.shared_redis import SharedRedis

logger = logging.getLogger("gptmini_graphql.spend")

# Each step is a Lua function of its own KEYS and ARGV (named so, their
# bodies read as scripts); `_STEPS` runs a user's waiting steps in order.
# Every key of one call is the same user's (hash tag `{user id}`).
_STEPS = """
local function reserve(KEYS, ARGV)
  -- KEYS: per budget, its spent counter, its reservations (a sorted set of ids
  -- scored by expiry) and their amounts (a hash of id -> amount).
  -- ARGV: now, expires, id, then per budget: amount, limit, seconds to keep.
  local now, expires, id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
  local n = #KEYS / 3
  local used, missing = {}, {}
  for i = 1, n do
    local spent_key, zkey, hkey = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
    local stale = redis.call('ZRANGEBYSCORE', zkey, '-inf', now)
    -- In slices: unpack() of more than ~8000 values fails the whole script.
    for j = 1, #stale, 1000 do
      redis.call('HDEL', hkey, unpack(stale, j, math.min(j + 999, #stale)))
    end
    if #stale > 0 then
      redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
    end
    local spent = redis.call('GET', spent_key)
    if not spent then
      missing[#missing + 1] = i - 1
    else
      local reserved = 0
      for _, amount in ipairs(redis.call('HVALS', hkey)) do
        reserved = reserved + tonumber(amount)
      end
      used[i] = tonumber(spent) + reserved
    end
  end
  if #missing > 0 then
    local out = {'missing'}
    for _, i in ipairs(missing) do out[#out + 1] = tostring(i) end
    return out
  end
  if redis.call('HEXISTS', KEYS[3], id) == 1 then
    -- Sent again (the reply was lost): granted before, nothing added.
    local out = {'granted'}
    for i = 1, n do out[#out + 1] = string.format('%d', used[i]) end
    return out
  end
  for i = 1, n do
    if used[i] + tonumber(ARGV[3*i+1]) > tonumber(ARGV[3*i+2]) then
      return {'refused', tostring(i - 1), string.format('%d', used[i])}
    end
  end
  local out = {'granted'}
  for i = 1, n do
    local keep = ARGV[3*i+3]
    redis.call('ZADD', KEYS[3*i-1], expires, id)
    redis.call('HSET', KEYS[3*i], id, ARGV[3*i+1])
    redis.call('EXPIRE', KEYS[3*i-1], keep)
    redis.call('EXPIRE', KEYS[3*i], keep)
    out[#out + 1] = string.format('%d', used[i] + tonumber(ARGV[3*i+1]))
  end
  return out
end

local function settle(KEYS, ARGV)
  -- KEYS as above, then the user's settled ids (a sorted set scored by when
  -- each is forgotten); ARGV: id, now, when to forget it, then per budget:
  -- charge, seconds to keep. A settle counts once, even if its reservation had
  -- expired; sent again, it does nothing. A counter lost meanwhile is left
  -- missing (seeded from the ledger later).
  local id, now, forget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
  local settled = KEYS[#KEYS]
  redis.call('ZREMRANGEBYSCORE', settled, '-inf', now)
  if redis.call('ZADD', settled, 'NX', forget, id) == 0 then
    return 0
  end
  redis.call('EXPIRE', settled, math.ceil(forget - now))
  for i = 1, (#KEYS - 1) / 3 do
    local spent_key, zkey, hkey = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
    redis.call('ZREM', zkey, id)
    redis.call('HDEL', hkey, id)
    if redis.call('EXISTS', spent_key) == 1 then
      redis.call('INCRBY', spent_key, ARGV[2*i+2])
      redis.call('EXPIRE', spent_key, ARGV[2*i+3])
    end
  end
  return 1
end

local function extend(KEYS, ARGV)
  -- KEYS: each budget's reservations; ARGV: now, expires, id. Only a
  -- reservation still live is pushed on (a lapsed or settled one stays gone).
  local now = tonumber(ARGV[1])
  for i = 1, #KEYS do
    local expiry = redis.call('ZSCORE', KEYS[i], ARGV[3])
    if expiry and tonumber(expiry) > now then
      redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3])
    end
  end
  return 1
end

-- KEYS: every step's keys, in order. ARGV: per step, its name, how many keys
-- and arguments it has, then its arguments. The reply: each step's reply.
local steps = {reserve = reserve, settle = settle, extend = extend}
local replies, k, a = {}, 1, 1
while a <= #ARGV do
  local nkeys, nargs = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  local keys = {unpack(KEYS, k, k + nkeys - 1)}
  local args = {unpack(ARGV, a + 3, a + 2 + nargs)}
  replies[#replies + 1] = steps[ARGV[a]](keys, args)
  k, a = k + nkeys, a + 3 + nargs
end
return replies
"""
# At most this many steps in one script call: Redis serves no other client
# while a script runs.
STEPS_PER_CALL = 100
MAX_NAMES = 10_000
# A settle waits this long at most for a step to go with (this process's
# next reserve, usually): a call alone then costs one round trip, not two.
# Meanwhile its reservation holds its worst case, as until any settle lands.
SETTLE_WAIT_SECONDS = 0.05

# One step: its function's name, keys and arguments, who waits for its reply
# (None: a settle, which nobody waits for), and its user's tag.
_Step = tuple[str, list[str], list[str | int], "asyncio.Future[Any] | None", str]


class RedisReservations:
    """Every key of a user shares the hash tag `{user id}`, so a script
    call's keys stay in one slot of a Redis Cluster. Through the app's one client
    and its outage policy (`SharedRedis.call`: a round trip that cannot reach
    Redis, or whose script fails, raises RedisUnavailable); the client is the
    app's, closed with it."""

    def __init__(self, redis: SharedRedis) -> None:
        self._redis = redis
        self._client = redis.client
        # Each user's and counter's key names, made once (cleared when many).
        self._names: dict[tuple[str, str], list[str]] = {}
        self._waiting: list[_Step] = []
        self._sending: asyncio.Handle | None = None
        self._settle_later: asyncio.TimerHandle | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def _keys(self, tag: str, budget: Budget) -> list[str]:
        names = self._names.get((tag, budget.counter))
        if names is None:
            if len(self._names) >= MAX_NAMES:
                self._names.clear()
            base = f"gptmini:spend:{{{tag}}}:{budget.counter}"
            names = [base, base + ":reserved", base + ":amounts"]
            self._names[tag, budget.counter] = names
        return names

    @staticmethod
    def _settled(tag: str) -> str:
        return f"gptmini:spend:{{{tag}}}:settled"

    @staticmethod
    def _keep(budget: Budget, now: float) -> int:
        return max(1, int(budget.ends - now) + KEEP_SECONDS)

    async def reserve(
        self,
        tag: str,
        reservation: str,
        holds: Sequence[tuple[Budget, int]],
        now: float,
        expires: float,
    ) -> Verdict:
        keys: list[str] = []
        args: list[str | int] = [repr(now), repr(expires), reservation]
        for budget, amount in holds:
            keys += self._keys(tag, budget)
            args += [amount, budget.limit, self._keep(budget, now)]
        reply = asyncio.get_running_loop().create_future()
        self._send(("reserve", keys, args, reply, tag))
        found = await reply  # cancelled: released if granted (_answer)
        answer = [_text(part) for part in found]
        if answer[0] == "missing":
            return Verdict(False, missing=[int(i) for i in answer[1:]])
        if answer[0] == "refused":
            return Verdict(False, used=[int(answer[2])], refused=int(answer[1]))
        return Verdict(True, used=[int(u) for u in answer[1:]])

    def settle(
        self,
        tag: str,
        reservation: str,
        charges: Sequence[tuple[Budget, int]],
        now: float,
    ) -> None:
        keys: list[str] = []
        args: list[str | int] = [reservation, repr(now), repr(now + SETTLED_SECONDS)]
        for budget, charge in charges:
            keys += self._keys(tag, budget)
            args += [charge, self._keep(budget, now)]
        keys.append(self._settled(tag))
        self._waiting.append(("settle", keys, args, None, tag))
        if self._sending is None and self._settle_later is None:
            self._settle_later = asyncio.get_running_loop().call_later(
                SETTLE_WAIT_SECONDS, self._start
            )

    async def extend(
        self,
        tag: str,
        reservation: str,
        budgets: Sequence[Budget],
        now: float,
        expires: float,
    ) -> None:
        keys = [self._keys(tag, budget)[1] for budget in budgets]
        reply = asyncio.get_running_loop().create_future()
        self._send(
            ("extend", keys, [repr(now), repr(expires), reservation], reply, tag)
        )
        await reply

    async def seed(self, tag: str, budget: Budget, spent: int, now: float) -> None:
        key, keep = self._keys(tag, budget)[0], self._keep(budget, now)
        await self._redis.call(lambda: self._client.set(key, spent, nx=True, ex=keep))

    async def drain(self) -> None:
        """Wait until every step asked for so far has been answered (shutdown)."""
        while self._waiting or self._in_flight:
            if self._waiting:
                if self._sending is not None:
                    self._sending.cancel()
                self._send_waiting()
            await asyncio.wait(self._in_flight)

    # --- the round trips ------------------------------------------------------

    def _send(self, step: _Step) -> None:
        self._waiting.append(step)
        self._start()

    def _start(self) -> None:
        """Send what waits at the end of this turn of the event loop (so the
        steps asked in one turn share a round trip)."""
        if self._settle_later is not None:
            self._settle_later.cancel()
            self._settle_later = None
        if self._sending is None:
            self._sending = asyncio.get_running_loop().call_soon(self._send_waiting)

    def _send_waiting(self) -> None:
        """One round trip for every step waiting, on its way at once: not
        after the round trips still in flight, whose replies it does not
        wait for (the line keeps their order)."""
        self._sending = None
        steps, self._waiting = self._waiting, []
        if steps:
            trip = asyncio.get_running_loop().create_task(self._round_trip(steps))
            self._in_flight.add(trip)
            trip.add_done_callback(self._in_flight.discard)

    async def _round_trip(self, steps: list[_Step]) -> None:
        calls = self._calls(steps)
        try:
            results = await self._redis.call(
                partial(self._ask, [command for command, _ in calls])
            )
        except BaseException as error:
            for step in steps:
                self._answer(step, error)
            if not isinstance(error, RedisUnavailable):
                raise  # cancelled (the loop is closing), or a bug
            return
        replies: list[Any] = [None] * len(steps)
        for (_, indexes), result in zip(calls, results, strict=True):
            for index, reply in zip(indexes, result, strict=True):
                replies[index] = reply
        for step, reply in zip(steps, replies, strict=True):
            self._answer(step, reply)

    async def _ask(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Each script call's reply; a call that failed raises its error."""
        results = await self._redis.line.ask(commands)
        for result in results:
            if isinstance(result, Exception):
                # A script that failed (READONLY after a failover, OOM, a key
                # of the wrong type): Redis is not doing its part. Raised
                # here, inside `SharedRedis.call`, it is an outage like any
                # other: the circuit opens, logged and counted, and every
                # step of the round trip gets RedisUnavailable (callers with
                # budgets: BUDGET_UNAVAILABLE), not a raw ResponseError.
                raise result
        return results

    def _calls(self, steps: list[_Step]) -> list[tuple[tuple[Any, ...], list[int]]]:
        """Each user's steps in script calls of their own, in order: each
        call's command, and the indexes of its steps."""
        by_user: dict[str, list[int]] = {}
        for index, step in enumerate(steps):
            by_user.setdefault(step[4], []).append(index)
        calls = []
        for indexes in by_user.values():
            for start in range(0, len(indexes), STEPS_PER_CALL):
                call = indexes[start : start + STEPS_PER_CALL]
                keys: list[str] = []
                args: list[str | int] = []
                for index in call:
                    name, step_keys, step_args, _, _ = steps[index]
                    keys += step_keys
                    args += [name, len(step_keys), len(step_args), *step_args]
                # EVAL, not EVALSHA: Redis keeps the script compiled by its
                # hash either way, and a Redis that restarted (or SCRIPT
                # FLUSHed) runs it all the same: no NOSCRIPT to load and run
                # again after later round trips already ran.
                calls.append((("EVAL", _STEPS, len(keys), *keys, *args), call))
        return calls

    def _answer(self, step: _Step, reply: Any) -> None:
        name, keys, args, waiter, tag = step
        failed = isinstance(reply, BaseException)
        if waiter is None:  # a settle
            if failed:
                self._settle_failed()
        elif not waiter.done():
            if failed:
                waiter.set_exception(reply)
            else:
                waiter.set_result(reply)
        elif name == "reserve" and not failed and _text(reply[0]) == "granted":
            # Its caller was cancelled meanwhile: nobody will settle it.
            # ARGV: now, expires, id, then amount, limit, keep per budget.
            now = float(args[0])
            release = [args[2], args[0], repr(now + SETTLED_SECONDS)]
            for keep in args[5::3]:
                release += [0, keep]
            self._send(("settle", [*keys, self._settled(tag)], release, None, tag))

    def _settle_failed(self) -> None:
        self._redis.metrics.budget_store_errors.inc()
        self._redis.metrics.budget_settle_failures.inc()
        logger.warning("could not settle a reservation; it will expire")


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
