"""Prometheus metrics: everything the server counts, and `GET /metrics`.

Every name starts with `gptmini_`. No label carries a user, a text or a raw
path: label values come from small sets (route templates, the schema's root
fields, error codes, configured upstreams and models), so a client cannot
grow the number of series.

    gptmini_http_requests_total{method,route,status}
    gptmini_http_request_duration_seconds{method,route}          histogram
    gptmini_http_requests_in_flight
    gptmini_graphql_operations_total{operation,outcome}          queries, mutations
    gptmini_graphql_operation_duration_seconds{operation}        histogram
    gptmini_graphql_subscriptions_total{field,outcome}
    gptmini_graphql_subscriptions_active{field}
    gptmini_graphql_time_to_first_token_seconds{field}           histogram
    gptmini_upstream_request_duration_seconds{upstream,model,outcome,stream}
    gptmini_upstream_requests_in_flight{upstream}    the embedded model's queue
    gptmini_llm_tokens_total{model,kind}             kind: input, output, cached_input
    gptmini_llm_cost_usd_total{model}
    gptmini_cache_requests_total{result}             hit, coalesced, miss
    gptmini_cache_errors_total{operation}            read, write
    gptmini_cache_saved_cost_usd_total{model}
    gptmini_rate_limit_refusals_total{limit}         user, login-address, login-user
    gptmini_redis_outages_total                      times Redis was lost
    gptmini_redis_down                               1 while this process does without Redis
    gptmini_ledger_rows_written_total                usage ledger rows in the database
    gptmini_ledger_rows_dropped_total                rows lost: queue full, refused, or shutdown without a database
    gptmini_budget_refusals_total{budget}            calls refused by a budget or the token rate limit
    gptmini_budget_store_errors_total                budget steps Redis could not do
    gptmini_budget_settle_failures_total             reservations left to expire (charged their worst case)
    gptmini_build_info{version}

`operation` is the operation's root field (`summarize`, `login`, ...):
`multiple` for several, `none` when nothing ran (a document that did not
parse or validate), `other` for anything the schema does not have. The name
a client gives its operation is in the log line, not in a label.

Each app has metrics of its own (`Metrics`, made by create_app and held by
its Services): two apps in one process count apart.

Several worker processes: `serve --workers N` gives them one fresh
PROMETHEUS_MULTIPROC_DIR. Running uvicorn yourself, set it to an empty
directory that every worker can write, the same for all of them, emptied
before each start:

    rm -rf /tmp/gptmini-metrics && mkdir -p /tmp/gptmini-metrics
    PROMETHEUS_MULTIPROC_DIR=/tmp/gptmini-metrics \\
        uvicorn --factory gptmini_graphql.app:create_app --workers 4 \\
        --host 0.0.0.0 --port 8000 --no-access-log

Each worker then writes its values to files there and whichever worker
answers `/metrics` adds them all up (prometheus_client's multiprocess mode;
the process_* and python_* metrics are left out in that mode).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

import openai
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptmini_graphql import __version__

if TYPE_CHECKING:
    from gptmini_graphql.llm.answers import TokenUsage

# Seconds. Requests and operations: from a cache hit (a millisecond) to a long
# completion; upstream calls and first tokens start slower.
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30, 60)
FIRST_TOKEN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30)

# No `*_created` series: twice the series for a start time nobody charts (and
# multiprocess mode has none anyway). A switch of prometheus_client's own,
# for the whole process.
disable_created_metrics()

_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# Introspection's root fields are in every schema.
_INTROSPECTION_FIELDS = frozenset({"__schema", "__type", "__typename"})
_MAX_MODELS = 32


class Metrics:
    """One app's metrics, in a registry of its own.

    `root_fields`: the schema's, the values the `operation` label may take
    besides multiple, none and other.
    """

    def __init__(self, root_fields: Iterable[str] = ()) -> None:
        # Multiprocess mode: prometheus_client reads the variable when it is
        # imported; each metric then writes to a file there, so the directory
        # must exist before the first one is made.
        self.multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        self.registry = registry = CollectorRegistry()
        if self.multiprocess_dir:
            os.makedirs(self.multiprocess_dir, exist_ok=True)
        else:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
        self.root_fields = _INTROSPECTION_FIELDS | frozenset(root_fields)
        self._models: set[str] = set()

        self.http_requests = Counter(
            "gptmini_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "gptmini_http_request_duration_seconds",
            "Time from a request's arrival to the end of its response (streams "
            "included).",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.http_in_flight = Gauge(
            "gptmini_http_requests_in_flight",
            "HTTP requests being answered now.",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.operations = Counter(
            "gptmini_graphql_operations",
            "GraphQL queries and mutations over HTTP, by root field and outcome "
            "(OK or the first error's code).",
            ["operation", "outcome"],
            registry=registry,
        )
        self.operation_duration = Histogram(
            "gptmini_graphql_operation_duration_seconds",
            "Time to answer a GraphQL query or mutation.",
            ["operation"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.subscriptions = Counter(
            "gptmini_graphql_subscriptions",
            "GraphQL subscriptions ended, by field and outcome (OK, CANCELLED or "
            "a code).",
            ["field", "outcome"],
            registry=registry,
        )
        self.subscriptions_active = Gauge(
            "gptmini_graphql_subscriptions_active",
            "GraphQL subscriptions streaming now.",
            ["field"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "gptmini_graphql_time_to_first_token_seconds",
            "Time from a subscription's start to its first text delta.",
            ["field"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=registry,
        )
        self.upstream_duration = Histogram(
            "gptmini_upstream_request_duration_seconds",
            "One call to an LLM upstream, retries included: to the whole answer, "
            "or for a stream (stream=true) to its start. outcome: ok, timeout, "
            "connection_error, cancelled, error, or the upstream's HTTP status.",
            ["upstream", "model", "outcome", "stream"],
            buckets=UPSTREAM_BUCKETS,
            registry=registry,
        )
        self.upstream_in_flight = Gauge(
            "gptmini_upstream_requests_in_flight",
            "Requests at an LLM upstream now, streams until their end. For "
            'upstream="embedded" this is the embedded model\'s queue: the request '
            "generating and those waiting.",
            ["upstream"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.llm_tokens = Counter(
            "gptmini_llm_tokens",
            "Tokens of upstream answers, by model and kind (input, output, and "
            "cached_input: the part of input the provider had cached).",
            ["model", "kind"],
            registry=registry,
        )
        self.llm_cost = Counter(
            "gptmini_llm_cost_usd",
            "Cost of upstream answers in US dollars, by model (models with a price).",
            ["model"],
            registry=registry,
        )
        cache_requests = Counter(
            "gptmini_cache_requests",
            "Response cache lookups: hit, coalesced (answered by an identical "
            "request in flight) or miss.",
            ["result"],
            registry=registry,
        )
        self.cache_hit = cache_requests.labels("hit")
        self.cache_coalesced = cache_requests.labels("coalesced")
        self.cache_miss = cache_requests.labels("miss")
        self.cache_errors = Counter(
            "gptmini_cache_errors",
            "Response cache reads and writes that went without it (Redis "
            "unreachable, or an entry unreadable); the request went upstream.",
            ["operation"],
            registry=registry,
        )
        self.cache_saved_cost = Counter(
            "gptmini_cache_saved_cost_usd",
            "What answers served from the response cache would have cost, in US "
            "dollars.",
            ["model"],
            registry=registry,
        )
        self.rate_limit_refusals = Counter(
            "gptmini_rate_limit_refusals",
            "Requests refused by a rate limit, by limit (user, login-address, "
            "login-user).",
            ["limit"],
            registry=registry,
        )
        self.redis_outages = Counter(
            "gptmini_redis_outages",
            "Times this process lost its Redis; until it answered again, rate "
            "limits followed their outage policy and the response cache and "
            "persisted queries did without it.",
            registry=registry,
        )
        self.redis_down = Gauge(
            "gptmini_redis_down",
            "1 while this process cannot reach Redis (summed over workers in "
            "multiprocess mode).",
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.ledger_written = Counter(
            "gptmini_ledger_rows_written",
            "Usage ledger rows written to the database.",
            registry=registry,
        )
        self.ledger_dropped = Counter(
            "gptmini_ledger_rows_dropped",
            "Usage ledger rows lost: the queue was full while the database was "
            "unavailable, the database refused them, or shutdown could not "
            "write them.",
            registry=registry,
        )
        self.budget_refusals = Counter(
            "gptmini_budget_refusals",
            "Model calls refused by a budget or the token rate limit, by budget "
            "(user.usd_per_day, key.tokens_per_month, user.tokens_per_minute, "
            "...).",
            ["budget"],
            registry=registry,
        )
        self.budget_store_errors = Counter(
            "gptmini_budget_store_errors",
            "Steps of the budget store that Redis could not do (it failed, or "
            "was down); callers with budgets are refused with BUDGET_UNAVAILABLE "
            "meanwhile.",
            registry=registry,
        )
        self.budget_settle_failures = Counter(
            "gptmini_budget_settle_failures",
            "Reservations that could not be settled and are left to expire (each "
            "charged its worst case until then).",
            registry=registry,
        )
        build_info = Gauge(
            "gptmini_build_info",
            "Always 1; the version is a label.",
            ["version"],
            multiprocess_mode="max",
            registry=registry,
        )
        build_info.labels(__version__).set(1)

    def close(self) -> None:
        """This process stops answering: in multiprocess mode its live gauges
        (in flight, active) go with it; the counters it wrote still count."""
        if self.multiprocess_dir:
            multiprocess.mark_process_dead(os.getpid(), self.multiprocess_dir)

    # --- bounded label values ---------------------------------------------------

    def operation_label(self, root_fields: Iterable[str]) -> str:
        fields = set(root_fields)
        if not fields:
            return "none"
        if not fields <= self.root_fields:
            return "other"
        return fields.pop() if len(fields) == 1 else "multiple"

    def model_label(self, model: str) -> str:
        """Model names come from settings and the upstream's answers: a few,
        but an upstream could send anything, so past a few dozen they are
        `other`."""
        if model in self._models:
            return model
        if len(self._models) >= _MAX_MODELS or len(model) > 100:
            return "other"
        self._models.add(model)
        return model

    # --- what the hooks call ----------------------------------------------------

    def count_operation(self, operation: str, outcome: str, started: float) -> None:
        """One GraphQL query or mutation over HTTP (its `operation_label`),
        answered now; `started` is its `time.perf_counter()` at arrival."""
        self.operations.labels(operation, _outcome(outcome)).inc()
        self.operation_duration.labels(operation).observe(time.perf_counter() - started)

    def stream_started(self, field: str) -> None:
        self.subscriptions_active.labels(field).inc()

    def stream_ended(
        self, field: str, outcome: str, first_token_seconds: float | None
    ) -> None:
        self.subscriptions_active.labels(field).dec()
        self.subscriptions.labels(field, _outcome(outcome)).inc()
        if first_token_seconds is not None:
            self.time_to_first_token.labels(field).observe(first_token_seconds)

    def count_usage(self, model: str, usage: TokenUsage) -> None:
        """The usage of one upstream answer (not of one served from the cache)."""
        model = self.model_label(model)
        self.llm_tokens.labels(model, "input").inc(usage.prompt_tokens)
        self.llm_tokens.labels(model, "output").inc(usage.completion_tokens)
        self.llm_tokens.labels(model, "cached_input").inc(usage.cached_tokens)
        if usage.cost_usd is not None:
            self.llm_cost.labels(model).inc(usage.cost_usd)

    def count_saved(self, model: str, saved_cost_usd: float | None) -> None:
        """An answer served from the response cache, and what it saved."""
        if saved_cost_usd is not None:
            self.cache_saved_cost.labels(self.model_label(model)).inc(saved_cost_usd)

    def upstream_call(self, upstream: str, model: str, stream: bool) -> UpstreamCall:
        """Times one upstream call and counts it in flight while it runs:

        with metrics.upstream_call(upstream.name, upstream.model, stream):
            answer = await upstream.post(...)
        """
        return UpstreamCall(self, upstream, model, stream)

    def streaming(self, upstream: str) -> Gauge:
        """An upstream stream now being read: in flight until `.dec()`."""
        gauge = self.upstream_in_flight.labels(upstream)
        gauge.inc()
        return gauge

    def redis_lost(self) -> None:
        self.redis_outages.inc()
        self.redis_down.set(1)

    def redis_back(self) -> None:
        self.redis_down.set(0)

    async def endpoint(self, request: Request) -> Response:
        """GET /metrics: Prometheus' text format, of every worker in
        multiprocess mode."""
        if self.multiprocess_dir:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self.multiprocess_dir)
            body = await run_in_threadpool(generate_latest, registry)
        else:
            body = generate_latest(self.registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)


def _outcome(code: str) -> str:
    return code if _CODE.fullmatch(code) else "other"


class UpstreamCall:
    __slots__ = ("in_flight", "metrics", "model", "started", "stream", "upstream")

    def __init__(self, metrics: Metrics, upstream: str, model: str, stream: bool):
        self.metrics = metrics
        self.upstream = upstream
        self.model = model
        self.stream = "true" if stream else "false"
        self.in_flight = metrics.upstream_in_flight.labels(upstream)

    def __enter__(self) -> UpstreamCall:
        self.in_flight.inc()
        self.started = time.perf_counter()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self.started
        self.in_flight.dec()
        self.metrics.upstream_duration.labels(
            self.upstream,
            self.metrics.model_label(self.model),
            upstream_outcome(error),
            self.stream,
        ).observe(elapsed)


def upstream_outcome(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, TimeoutError | openai.APITimeoutError):
        return "timeout"
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and 100 <= status < 600:
        return str(status)
    if isinstance(error, openai.APIConnectionError):
        return "connection_error"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "error"


# --- HTTP ------------------------------------------------------------------------


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status.

    Pure ASGI, outermost: requests refused by the other middleware (413,
    CSRF) are counted too, and a streamed response is timed to its end.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

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
            metrics.http_requests.labels(method, route, str(status)).inc()
            metrics.http_duration.labels(method, route).observe(
                time.perf_counter() - started
            )


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
