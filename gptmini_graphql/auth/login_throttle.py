"""Who may try a password now: OWASP's defence against guessing, without a
lockout anyone can trigger.

* Each client address gets LOGIN_RATE_LIMIT attempts, right or wrong: one
  guesser is slowed to that.
* Each username counts its failed logins from anywhere. Past
  LOGIN_USERNAME_FAILURE_LIMIT, an address that has failed for that username
  in the same window is refused; an address that has not may still try, once
  (the attempt is taken as it is made, so concurrent guesses get one between
  them, and given back if the password was right). A
  guessing farm is slowed to one guess per address per window, while the
  owner, from an address that has not failed, always gets in: failures from
  elsewhere never lock them out.

An IPv6 client is counted by its /64, the block one subscriber is given
(otherwise one subscriber would have 2^64 addresses that have not failed);
an IPv4 client by its address.

While Redis is unreachable both follow LOGIN_RATE_LIMIT_REDIS_OUTAGE, which
cannot be `open`.
"""

from __future__ import annotations

import hashlib
import ipaddress

from limits import RateLimitItem

from gptmini_graphql.errors import RateLimited
from gptmini_graphql.rate_limits import RateLimiter
from gptmini_graphql.settings import Settings


class LoginThrottle:
    def __init__(self, limiter: RateLimiter, settings: Settings) -> None:
        self.limiter = limiter
        self.per_address = settings.login_rate_limits
        self.per_username = settings.login_username_failure_limits
        # "This address has failed for this username": one failure per window.
        self.failed_here = [_once_per(item) for item in self.per_username]
        self.outage = settings.login_rate_limit_redis_outage

    async def admit(self, address: str, username: str) -> None:
        """Count the attempt, or raise RATE_LIMITED."""
        limiter, user, address = self.limiter, _key(username), _client(address)
        await limiter.hit(
            self.per_address, "login-address", address, outage=self.outage
        )
        under_attack = await limiter.reached(
            self.per_username, "login-user", user, outage=self.outage
        )
        if under_attack is None:
            return
        # The address's one attempt is taken here, checked and recorded in one
        # step: checking now and recording the failure later let every
        # concurrent guess through before the first was recorded.
        try:
            await limiter.hit(
                self.failed_here,
                "login-failed",
                address,
                user,
                outage=self.outage,
                refusal="login-user",
            )
        except RateLimited as refused:
            raise RateLimited(
                "Too many failed logins for this account; retry later.",
                retry_after=refused.retry_after,
            ) from None

    async def failed(self, address: str, username: str) -> None:
        """Remember a wrong password, for the username and this address."""
        limiter, user, address = self.limiter, _key(username), _client(address)
        await limiter.count(self.per_username, "login-user", user, outage=self.outage)
        # Already taken if `admit` took it; `count` adds nothing to a full one.
        await limiter.count(
            self.failed_here, "login-failed", address, user, outage=self.outage
        )

    async def succeeded(self, address: str, username: str) -> None:
        """The right password: this address has not failed after all (the
        owner, taking an attempt in `admit`, must not be refused next time)."""
        await self.limiter.clear(
            self.failed_here, "login-failed", _client(address), _key(username)
        )


def _once_per(item: RateLimitItem) -> RateLimitItem:
    return type(item)(1, item.multiples)


def _client(address: str) -> str:
    """Who is trying: an IPv4 address, or an IPv6 address's /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # "unknown": no address to group
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        # From the integer: a scope ("%eth0") is no part of the network.
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


def _key(username: str) -> str:
    # Usernames stay out of Redis keys (and so out of anything that lists them).
    return hashlib.sha256(username.encode("utf-8", "surrogatepass")).hexdigest()
