"""Prometheus metrics: everything the server counts, and `GET /metrics`.

What is counted, and under which names and labels, is metrics_series.py;
HTTP requests are counted by metrics_middleware.py.

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
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Gauge,
    generate_latest,
    multiprocess,
)
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from gptmini_graphql.llm.upstream_errors import APIConnectionError, APITimeoutError
from gptmini_graphql.metrics_series import MetricSeries

if TYPE_CHECKING:
    from gptmini_graphql.llm.answers import TokenUsage

_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# Introspection's root fields are in every schema.
_INTROSPECTION_FIELDS = frozenset({"__schema", "__type", "__typename"})
_MAX_MODELS = 32


class Metrics(MetricSeries):
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
        # Each series' child by its label values, looked up once: `labels()`
        # takes a lock and builds its key on every call, and a miss counted
        # through eight of them. (Every value is bounded: see the *_label
        # methods, _outcome and upstream_outcome.)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        super().__init__(registry)  # the series, once the directory exists

    def child(self, series: Any, *values: str) -> Any:
        """`series.labels(*values)`, made once."""
        key = (series, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = series.labels(*values)
        return found

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
        self.child(self.operations, operation, _outcome(outcome)).inc()
        self.child(self.operation_duration, operation).observe(
            time.perf_counter() - started
        )

    def stream_started(self, field: str) -> None:
        self.child(self.subscriptions_active, field).inc()

    def stream_ended(
        self, field: str, outcome: str, first_token_seconds: float | None
    ) -> None:
        self.child(self.subscriptions_active, field).dec()
        self.child(self.subscriptions, field, _outcome(outcome)).inc()
        if first_token_seconds is not None:
            self.child(self.time_to_first_token, field).observe(first_token_seconds)

    def count_usage(self, model: str, usage: TokenUsage) -> None:
        """The usage of one upstream answer (not of one served from the cache)."""
        model = self.model_label(model)
        self.child(self.llm_tokens, model, "input").inc(usage.prompt_tokens)
        self.child(self.llm_tokens, model, "output").inc(usage.completion_tokens)
        self.child(self.llm_tokens, model, "cached_input").inc(usage.cached_tokens)
        if usage.cost_usd is not None:
            self.child(self.llm_cost, model).inc(usage.cost_usd)

    def count_saved(self, model: str, saved_cost_usd: float | None) -> None:
        """An answer served from the response cache, and what it saved."""
        if saved_cost_usd is not None:
            saved = self.child(self.cache_saved_cost, self.model_label(model))
            saved.inc(saved_cost_usd)

    def upstream_call(self, upstream: str, model: str, stream: bool) -> UpstreamCall:
        """Times one upstream call and counts it in flight while it runs:

        with metrics.upstream_call(upstream.name, upstream.model, stream):
            answer = await upstream.post(...)
        """
        return UpstreamCall(self, upstream, model, stream)

    def streaming(self, upstream: str) -> Gauge:
        """An upstream stream now being read: in flight until `.dec()`."""
        gauge: Gauge = self.child(self.upstream_in_flight, upstream)
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
        self.in_flight = metrics.child(metrics.upstream_in_flight, upstream)

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
        metrics = self.metrics
        metrics.child(
            metrics.upstream_duration,
            self.upstream,
            metrics.model_label(self.model),
            upstream_outcome(error),
            self.stream,
        ).observe(elapsed)


def upstream_outcome(error: BaseException | None) -> str:
    if error is None:
        return "ok"
    if isinstance(error, TimeoutError | APITimeoutError):
        return "timeout"
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and 100 <= status < 600:
        return str(status)
    if isinstance(error, APIConnectionError):
        return "connection_error"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "error"
