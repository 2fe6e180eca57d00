"""How the API reaches the embedded model's server: its address, an HTTP
client for it, whether it can answer now, and what its refusals mean to a
caller (in words about the local model, not about a provider)."""

from __future__ import annotations

from collections.abc import Callable

import httpx2

from gptmini_graphql.errors import AppError, UpstreamRateLimited, UpstreamUnavailable
from gptmini_graphql.llm.resilience import retry_after_seconds
from gptmini_graphql.llm.upstream import upstream_error
from gptmini_graphql.llm.upstream_errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
)

UNIX = "unix:"
# The host name in requests over a Unix socket: any name does, none resolves.
SOCKET_HOST = "http://embedded-model"
NOT_RUNNING = (
    "The embedded model's server is not answering (it may be starting or restarting)."
)


class EmbeddedServer:
    """The embedded model's server at `url`: `unix:/path.sock` or `http://…`.

    `explain_outage`, set when the process is ours, tells why it is down.
    """

    explain_outage: Callable[[], str | None] | None = None

    def __init__(self, url: str, *, timeout: float) -> None:
        if url.startswith(UNIX):
            transport = httpx2.AsyncHTTPTransport(uds=url.removeprefix(UNIX))
            self.root = SOCKET_HOST
        else:
            transport = None
            self.root = url.rstrip("/")
        self.api_url = f"{self.root}/v1"
        # Closed with the upstream's ChatClient, which it is given to.
        self.http = httpx2.AsyncClient(transport=transport, timeout=timeout)

    async def not_ready(self) -> str | None:
        """None when it can answer; otherwise why not, for `/readyz`."""
        try:
            response = await self.http.get(f"{self.root}/readyz", timeout=2)
        except httpx2.TransportError:
            explain = self.explain_outage
            return (explain and explain()) or NOT_RUNNING
        if response.status_code == 200:
            return None
        try:
            state = response.json()
        except ValueError:
            state = {}
        if state.get("status") == "failed":
            return f"The embedded model failed to load: {state.get('error')}"
        return "The embedded model is loading."


def embedded_error(exc: APIError) -> AppError:
    """What an error from the embedded model's server means to a caller."""
    if isinstance(exc, APIConnectionError) and not isinstance(exc, APITimeoutError):
        # Its process died mid-answer, or is not up yet: the supervisor is on it.
        return UpstreamUnavailable(NOT_RUNNING + " Retry shortly.", retry_after=1)
    if isinstance(exc, APIStatusError) and exc.status_code == 429:
        # Our own server's words: how busy it is and how long to wait.
        return UpstreamRateLimited(
            _message(exc), retry_after=retry_after_seconds(exc.headers)
        )
    if isinstance(exc, APIStatusError) and exc.status_code == 503:
        return UpstreamUnavailable(
            _message(exc), retry_after=retry_after_seconds(exc.headers)
        )
    return upstream_error(exc)


def _message(exc: APIError) -> str:
    detail = exc.body.get("message") if isinstance(exc.body, dict) else None
    return detail if isinstance(detail, str) else exc.message
