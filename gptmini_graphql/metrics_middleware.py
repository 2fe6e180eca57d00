"""Counts and times every HTTP request by route template, method and status
(the `gptmini_http_*` series), and names a request's route for tracing.py."""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptmini_graphql.metrics import Metrics

_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status.

    Pure ASGI, outermost: requests refused by the other middleware (413,
    CSRF) are counted too, and a streamed response is timed to its end.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics
        # Each series' child by its labels, looked up once: `labels()` takes
        # a lock and builds its key on every call, a third of the cost of
        # counting. (Methods, routes and statuses are few.)
        self._counted: dict[tuple[str, str, int], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # 499 (nginx's "client closed request") when the app ends without an
        # answer because its client left; 500 when it raises before answering.
        status = 499

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        metrics = self.metrics
        metrics.http_in_flight.inc()
        try:
            await self.app(scope, receive, send_with_status)
        except BaseException:
            status = 500 if status == 499 else status
            raise
        finally:
            metrics.http_in_flight.dec()
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = route_template(scope)
            counted = self._counted.get((method, route, status))
            if counted is None:
                counted = self._counted[method, route, status] = (
                    metrics.http_requests.labels(method, route, str(status))
                )
            counted.inc()
            timed = self._timed.get((method, route))
            if timed is None:
                timed = self._timed[method, route] = metrics.http_duration.labels(
                    method, route
                )
            timed.observe(time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """`/graphql`, `/graphiql/static`: the route that served the request, or
    the one that would have (a request refused before routing), or
    `unmatched` (404s, whatever their path)."""
    route = scope.get("route")
    if route is None:
        app = scope.get("app")
        for candidate in getattr(app, "routes", ()):
            match, _ = candidate.matches(scope)
            if match is not Match.NONE:
                route = candidate
                break
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"
