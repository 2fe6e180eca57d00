"""A caller's rate limits charged on Redis and read back in one round trip.

`limits` charges a sliding window counter with one script
(acquire_sliding_window.lua) and reads what is left of it, for the RateLimit
headers, with another (sliding_window.lua): two round trips per limit for
every operation. CHARGE below runs both scripts' steps for each of a
caller's limits in one call, on the same keys and by the same rules, so
`limits` itself (the login throttle, `reached`, `clear`, the in-memory
fallback's twin) sees the very same counters. `window` then does
`limits`' arithmetic (SlidingWindowCounterRateLimiter.get_window_stats) on
the counts the script read.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem

if TYPE_CHECKING:
    from gptmini_graphql.shared_redis import SharedRedis

# What is left of a limit (requests) and seconds until it next frees one.
Window = tuple[RateLimitItem, int, float]

# KEYS: each limit's previous and current window; ARGV: the cost, then each
# limit's amount and expiry (seconds). Returns the 1-based index of the
# first limit that refused (0: none did; later ones are not charged, as
# `limits` stops at the first), then for each limit its previous count and
# TTL and its current count and TTL (milliseconds), as they are afterwards.
CHARGE = """
local cost = tonumber(ARGV[1])
local refused = 0
local reply = {0}
for i = 1, #KEYS / 2 do
    local previous, current = KEYS[2 * i - 1], KEYS[2 * i]
    local limit = tonumber(ARGV[2 * i])
    local expiry = tonumber(ARGV[2 * i + 1]) * 1000

    -- The current window expired: shift it to the previous one.
    local current_ttl = tonumber(redis.call('pttl', current))
    if current_ttl > 0 and current_ttl < expiry then
        redis.call('rename', current, previous)
        redis.call('set', current, 0, 'PX', current_ttl + expiry)
    end
    local previous_count = tonumber(redis.call('get', previous)) or 0
    local previous_ttl = math.max(tonumber(redis.call('pttl', previous)), 0)
    local current_count = tonumber(redis.call('get', current)) or 0
    current_ttl = math.max(tonumber(redis.call('pttl', current)), 0)

    if refused == 0 then
        local weighted = math.floor(previous_count * previous_ttl / expiry)
            + current_count
        if cost > limit or weighted + cost > limit then
            refused = i
        elseif redis.call('exists', current) == 1 then
            current_count = redis.call('incrby', current, cost)
        else
            redis.call('set', current, cost, 'PX', expiry * 2)
            current_count, current_ttl = cost, expiry * 2
        end
    end
    table.insert(reply, previous_count)
    table.insert(reply, previous_ttl)
    table.insert(reply, current_count)
    table.insert(reply, current_ttl)
end
reply[1] = refused
return reply
"""


@dataclass(frozen=True, slots=True)
class Charged:
    """What a charge did: the limit that refused it, if one did, with the
    seconds until it has room (None: never, the cost is over the limit
    itself); and every limit's window afterwards."""

    refused: tuple[RateLimitItem, float | None] | None
    windows: list[Window]


class RedisWindows:
    """The script, on the app's Redis client, under `limits`' key prefix.

    Called by its SHA with EVALSHA rather than through redis-py's Script,
    whose every call checks the client against a runtime Protocol (10 us)."""

    def __init__(self, redis: SharedRedis, key_prefix: str) -> None:
        from redis.exceptions import NoScriptError  # imported with Redis only

        self._client = redis.client
        self._line = redis.line
        self._prefix = key_prefix
        # Redis names scripts by SHA-1: an identifier, not security.
        self._sha = hashlib.sha1(CHARGE.encode(), usedforsecurity=False).hexdigest()
        self._no_script = NoScriptError

    async def charge(
        self, limits: list[RateLimitItem], identifiers: tuple[str, ...], cost: int
    ) -> Charged:
        keys: list[str] = []
        args: list[int] = [cost]
        for item in limits:
            # `limits`' own keys, "{key}" and "{key}/-1". One script reads
            # every limit's keys, which a Redis Cluster would refuse
            # (CROSSSLOT): we take one Redis server by URL, not a Cluster.
            current = f"{self._prefix}:{{{item.key_for(*identifiers)}}}"
            keys += (f"{current}/-1", current)
            args += (item.amount, item.get_expiry())
        reply = await self._run(keys, args)
        windows = []
        for index, item in enumerate(limits):
            counts = reply[1 + 4 * index : 5 + 4 * index]
            remaining, reset_in = window(item, *(int(count) for count in counts))
            windows.append((item, remaining, reset_in))
        refused = None
        if reply[0]:
            item, _, reset_in = windows[reply[0] - 1]
            refused = (item, None if cost > item.amount else reset_in)
        return Charged(refused, windows)

    async def _run(self, keys: list[str], args: list[int]) -> list[Any]:
        # On the app's pipelined line: written at once, with whatever else
        # this turn of the event loop sends (a command of the client's own
        # costs four times the CPU: its pool, its timeouts, its hooks).
        line = self._line
        try:
            reply = await line.command("EVALSHA", self._sha, len(keys), *keys, *args)
        except self._no_script:
            # Redis restarted or flushed its scripts: load it again.
            self._sha = await self._client.script_load(CHARGE)
            reply = await line.command("EVALSHA", self._sha, len(keys), *keys, *args)
        return list(reply)


def window(
    item: RateLimitItem,
    previous_count: int,
    previous_ttl_ms: int,
    current_count: int,
    current_ttl_ms: int,
) -> tuple[int, float]:
    """What is left of `item` and seconds until it resets, from its counters:
    `limits`' get_window_stats, on counts already read."""
    expiry = item.get_expiry()
    previous_expires_in = previous_ttl_ms / 1000
    weighted = previous_count * previous_expires_in / expiry + current_count
    remaining = max(0, item.amount - math.floor(weighted))
    if not (previous_count or current_count):
        return remaining, 0.0
    previous_reset_in = current_reset_in = math.inf
    if previous_count:
        previous_reset_in = previous_expires_in % (expiry / previous_count)
    if current_count:
        # Read in the very millisecond the window began (its TTL exactly
        # twice the expiry), `limits`' remainder would say it resets now.
        current_reset_in = (current_ttl_ms / 1000) % expiry or expiry
    return remaining, max(min(previous_reset_in, current_reset_in), 0.0)
