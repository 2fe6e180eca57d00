"""What one run of the checks shares: the cluster, the client, an admin, a
few GraphQL documents, and what the load phase sent (for checks after it)."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from clustercheck.client import Client, Reply
from clustercheck.cluster import Cluster

LOGIN = """mutation($u: String!, $p: String!) {
  login(username: $u, password: $p) { accessToken } }"""
CREATE_USER = """mutation($u: String!, $p: String!) {
  createUser(username: $u, password: $p, role: USER) { id } }"""
SET_LIMIT = """mutation($u: String!, $l: String!) {
  updateUser(username: $u, rateLimit: $l) { rateLimit } }"""
CREATE_KEY = """mutation($n: String!) {
  createApiKey(name: $n) { key apiKey { id } } }"""
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }"
ME = "query { me { username } }"
SUMMARIZE = """query($t: String!) {
  summarize(text: $t, maxWords: 30) { text cached } }"""


@dataclass(frozen=True)
class Outcome:
    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class Load:
    """What the kill-a-replica phase sent, for checks that look at it after."""

    token: str  # its user's: nothing else in the run is theirs
    replies: list[Reply]
    victim: int
    killed_at: float  # time.monotonic()


@dataclass
class Run:
    cluster: Cluster
    client: Client
    admin: str  # an admin's access token
    load: Load | None = None

    def nonce(self) -> str:
        return secrets.token_hex(4)

    async def login(self, username: str, password: str, replica: int) -> str:
        reply = await self.client.post(
            LOGIN, {"u": username, "p": password}, replica=replica
        )
        return reply.data["login"]["accessToken"]

    async def new_user(self, replica: int, rate_limit: str | None = None) -> str:
        """A fresh user's name (password: the name twice), made on `replica`."""
        username = f"user-{self.nonce()}"
        reply = await self.client.post(
            CREATE_USER, {"u": username, "p": username * 2}, token=self.admin,
            replica=replica,
        )  # fmt: skip
        reply.data  # noqa: B018 (raises, with the reply, if it failed)
        if rate_limit is not None:
            limit = {"u": username, "l": rate_limit}
            (await self.client.post(SET_LIMIT, limit, token=self.admin)).data  # noqa: B018
        return username


Check = Callable[[Run], Awaitable[Outcome]]
