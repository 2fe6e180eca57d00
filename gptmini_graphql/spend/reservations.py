"""Reservations against budgets, in one atomic step: in memory (exact for
one process), or in Redis with Lua scripts (exact across every process that
shares it).

For each budget and period there is a spent counter and a set of live
reservations, each with an expiry time. `reserve` drops expired
reservations, then grants only if, for every budget at once, spent + live
reservations + this request's amount stays within the limit; `settle`
removes the reservation and adds what the call really cost. A process that
dies holding a reservation leaves it to expire by itself.

A counter that does not exist yet (a new period, a restarted Redis, a new
process in memory) is reported as missing: the caller seeds it from the
ledger (`seed`, set only if still missing) and asks again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gptmini_graphql.spend.budgets import Budget

if TYPE_CHECKING:
    from gptmini_graphql.shared_redis import SharedRedis

# Counters outlive their period by this much (then Redis forgets them).
KEEP_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class Verdict:
    """What `reserve` found. Granted: `used` is each budget's spent + live
    reservations, this one included. Refused: `refused` is the index of the
    first budget without room, `used[0]` what it had used. Missing: the
    indexes of budgets whose counter must be seeded first."""

    granted: bool
    used: list[int] = field(default_factory=list)
    refused: int | None = None
    missing: list[int] = field(default_factory=list)


class ReservationStore(Protocol):
    """A step that cannot reach the store raises RedisUnavailable."""

    async def reserve(
        self,
        tag: str,
        reservation: str,
        holds: Sequence[tuple[Budget, int]],
        now: float,
        expires: float,
    ) -> Verdict: ...

    async def settle(
        self,
        tag: str,
        reservation: str,
        charges: Sequence[tuple[Budget, int]],
        now: float,
    ) -> list[int | None]: ...

    async def extend(
        self, tag: str, reservation: str, budgets: Sequence[Budget], expires: float
    ) -> None: ...

    async def seed(self, tag: str, budget: Budget, spent: int, now: float) -> None: ...


class _Counter:
    __slots__ = ("end", "reservations", "spent")

    def __init__(self, spent: int, end: float) -> None:
        self.spent = spent
        self.end = end
        self.reservations: dict[str, tuple[int, float]] = {}  # id -> (amount, expiry)

    def used(self, now: float) -> int:
        stale = [r for r, (_, expiry) in self.reservations.items() if expiry <= now]
        for reservation in stale:
            del self.reservations[reservation]
        return self.spent + sum(amount for amount, _ in self.reservations.values())


class MemoryReservations:
    """The same semantics in this process's memory (no await inside a step,
    so each step is atomic on the event loop)."""

    def __init__(self) -> None:
        self._counters: dict[str, _Counter] = {}
        self._next_sweep = 0.0

    async def reserve(
        self,
        tag: str,
        reservation: str,
        holds: Sequence[tuple[Budget, int]],
        now: float,
        expires: float,
    ) -> Verdict:
        self._sweep(now)
        counters = [self._counters.get(b.counter) for b, _ in holds]
        missing = [i for i, c in enumerate(counters) if c is None]
        if missing:
            return Verdict(False, missing=missing)
        present = [c for c in counters if c is not None]  # all of them, now
        used = [c.used(now) for c in present]
        for index, ((budget, amount), before) in enumerate(
            zip(holds, used, strict=True)
        ):
            if before + amount > budget.limit:
                return Verdict(False, used=[before], refused=index)
        for (_, amount), counter in zip(holds, present, strict=True):
            counter.reservations[reservation] = (amount, expires)
        return Verdict(
            True, used=[u + a for u, (_, a) in zip(used, holds, strict=True)]
        )

    async def settle(
        self,
        tag: str,
        reservation: str,
        charges: Sequence[tuple[Budget, int]],
        now: float,
    ) -> list[int | None]:
        used: list[int | None] = []
        for budget, charge in charges:
            counter = self._counters.get(budget.counter)
            if counter is None:
                used.append(None)  # lost meanwhile: seeded again from the ledger
                continue
            counter.reservations.pop(reservation, None)
            counter.spent += charge
            used.append(counter.used(now))
        return used

    async def extend(
        self, tag: str, reservation: str, budgets: Sequence[Budget], expires: float
    ) -> None:
        for budget in budgets:
            counter = self._counters.get(budget.counter)
            if counter is not None and reservation in counter.reservations:
                amount, _ = counter.reservations[reservation]
                counter.reservations[reservation] = (amount, expires)

    async def seed(self, tag: str, budget: Budget, spent: int, now: float) -> None:
        self._counters.setdefault(
            budget.counter, _Counter(spent, budget.end.timestamp())
        )

    def _sweep(self, now: float) -> None:
        """Forget counters of periods long over (once a minute at most)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + 60
        over = [k for k, c in self._counters.items() if c.end + KEEP_SECONDS < now]
        for name in over:
            del self._counters[name]


# KEYS: per budget, its spent counter, its reservations (a sorted set of ids
# scored by expiry) and their amounts (a hash of id -> amount).
# ARGV: now, expires, id, then per budget: amount, limit, seconds to keep.
_RESERVE = """
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
"""

# KEYS as above; ARGV: now, id, then per budget: charge, seconds to keep.
# A counter lost meanwhile is left missing (seeded from the ledger later).
_SETTLE = """
local now, id = tonumber(ARGV[1]), ARGV[2]
local out = {}
for i = 1, #KEYS / 3 do
  local spent_key, zkey, hkey = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  redis.call('ZREM', zkey, id)
  redis.call('HDEL', hkey, id)
  if redis.call('EXISTS', spent_key) == 1 then
    local spent = redis.call('INCRBY', spent_key, ARGV[2*i+1])
    redis.call('EXPIRE', spent_key, ARGV[2*i+2])
    local reserved = 0
    for _, amount in ipairs(redis.call('HVALS', hkey)) do
      reserved = reserved + tonumber(amount)
    end
    out[i] = string.format('%d', spent + reserved)
  else
    out[i] = ''
  end
end
return out
"""

_EXTEND = """
for i = 1, #KEYS do redis.call('ZADD', KEYS[i], 'XX', ARGV[1], ARGV[2]) end
return 1
"""


class RedisReservations:
    """The same semantics in Redis, one Lua script per step, through the
    app's one client and its outage policy (`SharedRedis.call`: a step that
    cannot reach Redis raises RedisUnavailable). Every key of a user shares
    the hash tag `{user id}`, so a script's keys stay in one slot of a Redis
    Cluster. The client is the app's: closed with it, never here."""

    def __init__(self, redis: SharedRedis) -> None:
        self._redis = redis
        client = redis.client
        self._client = client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._extend = client.register_script(_EXTEND)

    @staticmethod
    def _keys(tag: str, budget: Budget) -> list[str]:
        base = f"gptmini:spend:{{{tag}}}:{budget.counter}"
        return [base, base + ":reserved", base + ":amounts"]

    @staticmethod
    def _keep(budget: Budget, now: float) -> int:
        return max(1, int(budget.end.timestamp() - now) + KEEP_SECONDS)

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
        found = await self._redis.call(lambda: self._reserve(keys=keys, args=args))
        answer = [_text(part) for part in found]
        if answer[0] == "missing":
            return Verdict(False, missing=[int(i) for i in answer[1:]])
        if answer[0] == "refused":
            return Verdict(False, used=[int(answer[2])], refused=int(answer[1]))
        return Verdict(True, used=[int(u) for u in answer[1:]])

    async def settle(
        self,
        tag: str,
        reservation: str,
        charges: Sequence[tuple[Budget, int]],
        now: float,
    ) -> list[int | None]:
        keys: list[str] = []
        args: list[str | int] = [repr(now), reservation]
        for budget, charge in charges:
            keys += self._keys(tag, budget)
            args += [charge, self._keep(budget, now)]
        found = await self._redis.call(lambda: self._settle(keys=keys, args=args))
        return [int(u) if u else None for u in map(_text, found)]

    async def extend(
        self, tag: str, reservation: str, budgets: Sequence[Budget], expires: float
    ) -> None:
        keys = [self._keys(tag, budget)[1] for budget in budgets]
        args = [repr(expires), reservation]
        await self._redis.call(lambda: self._extend(keys=keys, args=args))

    async def seed(self, tag: str, budget: Budget, spent: int, now: float) -> None:
        key, keep = self._keys(tag, budget)[0], self._keep(budget, now)
        await self._redis.call(lambda: self._client.set(key, spent, nx=True, ex=keep))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
