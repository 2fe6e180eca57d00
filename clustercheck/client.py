"""The client: GraphQL over HTTP to the replicas, round robin unless told
which one. Nothing stands between it and them, so a dead replica shows up
here as a refused connection, never as a response."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Reply:
    replica: int
    sent: float  # time.monotonic() when the request left
    received: float  # and when its answer (or failure) came
    status: int | None  # None: no HTTP response (connection refused or cut)
    body: dict[str, Any] | None
    failure: str | None = None  # what went wrong below HTTP

    @property
    def codes(self) -> list[str]:
        errors = (self.body or {}).get("errors") or []
        return [error.get("extensions", {}).get("code", "?") for error in errors]

    @property
    def ok(self) -> bool:
        """An answer with data and no error."""
        return self.status == 200 and not self.codes and bool(self.body)

    @property
    def data(self) -> dict[str, Any]:
        assert self.ok, self
        return self.body["data"]  # type: ignore[index]

    def describe(self) -> str:
        if self.status is None:
            return f"api{self.replica}: no response ({self.failure})"
        return f"api{self.replica}: HTTP {self.status} {self.body}"


class Client:
    def __init__(self, urls: list[str]) -> None:
        self._clients = [
            httpx.AsyncClient(base_url=url, timeout=TIMEOUT_SECONDS) for url in urls
        ]
        self._turns = itertools.cycle(range(len(urls)))

    @property
    def replicas(self) -> int:
        return len(self._clients)

    async def post(
        self,
        query: str | None,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        replica: int | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> Reply:
        index = next(self._turns) if replica is None else replica
        body: dict[str, Any] = {"variables": variables or {}}
        if query is not None:
            body["query"] = query
        if extensions is not None:
            body["extensions"] = extensions
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        sent = time.monotonic()
        try:
            response = await self._clients[index].post(
                "/graphql", json=body, headers=headers
            )
        except httpx.TransportError as error:
            failure = f"{type(error).__name__}: {error}"
            return Reply(index, sent, time.monotonic(), None, None, failure)
        received = time.monotonic()
        try:
            parsed = response.json()
        except ValueError:
            parsed = {"text": response.text[:200]}
        return Reply(index, sent, received, response.status_code, parsed)

    async def get(self, path: str, replica: int) -> int | None:
        try:
            return (await self._clients[replica].get(path)).status_code
        except httpx.TransportError:
            return None

    async def gather(self, *calls: Any) -> list[Reply]:
        return list(await asyncio.gather(*calls))

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
