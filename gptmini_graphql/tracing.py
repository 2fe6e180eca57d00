"""OpenTelemetry tracing: on when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set; off, and free, otherwise.

The spans of one request:

    POST /graphql | graphql <root field>   SERVER: the HTTP request, and on
                                           /graphql the operation it carries:
                                           request id, operation name, root
                                           fields, outcome, model, tokens, cost
      graphql subscription <field>         one subscription (also over WebSocket,
                                           where it is a trace of its own)
      cache lookup                         the response cache's read: hit or not
      chat <model>                         CLIENT: one call to an LLM upstream,
                                           its retries included

An incoming W3C `traceparent` header continues the caller's trace. The SDK
reads its own variables: OTEL_SERVICE_NAME (default `gptmini-graphql`),
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG,
OTEL_EXPORTER_OTLP_HEADERS, ...; spans go out over OTLP HTTP/protobuf (the
collector's port 4318), or gRPC when OTEL_EXPORTER_OTLP_PROTOCOL=grpc and
opentelemetry-exporter-otlp-proto-grpc is installed. OTEL_SDK_DISABLED=true
turns it off.

Each app has a tracer of its own (`Tracing`, made by create_app and held by
its Services), with its own provider: two apps in one process trace apart.
Off, the opentelemetry packages are not even imported: `span()` hands out one
shared no-op context manager and the middleware is not installed.

This module knows spans, not GraphQL: what an operation was (its name, root
fields, model, tokens, cost) is said by operation_log.py, the operation's own
log and trace step.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gptmini_graphql import __version__
from gptmini_graphql.metrics_middleware import route_template

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

logger = logging.getLogger("gptmini_graphql.tracing")

SERVICE_NAME = "gptmini-graphql"
# Probes and scrapes would bury the requests worth looking at.
UNTRACED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})

_NO_SPAN = contextlib.nullcontext()


def configured() -> bool:
    """Whether the environment asks for tracing."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


class Tracing:
    """One app's tracer, or none (off): `Tracing()` traces nothing."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self._tracer = (
            provider.get_tracer("gptmini_graphql", __version__) if provider else None
        )

    @classmethod
    def from_environment(cls) -> Tracing:
        """On if the environment asks for it: spans go out over OTLP."""
        if not configured():
            return cls()
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        return cls._with(BatchSpanProcessor(_otlp_exporter()))

    @classmethod
    def to(cls, exporter: SpanExporter) -> Tracing:
        """On, each span handed to `exporter` as it ends: how tests read them."""
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor

        return cls._with(SimpleSpanProcessor(exporter))

    @classmethod
    def _with(cls, processor: Any) -> Tracing:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider

        resource = Resource.create()
        name = str(resource.attributes.get("service.name", ""))
        if name.startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
        # Not the global provider: this app's alone. It flushes its last spans
        # when the process exits, and when the app stops (`flush`).
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(processor)
        logger.info(
            "tracing on",
            extra={"service_name": resource.attributes.get("service.name")},
        )
        return cls(provider)

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def flush(self) -> None:
        """Send what is left (the app stops)."""
        if self._provider is not None:
            self._provider.force_flush()

    def middleware(self) -> list[Middleware]:
        """The tracing middleware, when tracing is on: for the app's list."""
        if self._tracer is None:
            return []
        return [Middleware(TracingMiddleware, tracing=self)]

    def span(
        self,
        name: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        client: bool = False,
    ) -> contextlib.AbstractContextManager[Span | None]:
        """A child span of the current one for the block (None inside when off)."""
        if self._tracer is None:
            return _NO_SPAN
        from opentelemetry.trace import SpanKind

        return self._tracer.start_as_current_span(
            name,
            attributes=attributes,
            kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
        )

    def upstream_span(
        self, upstream: str, model: str, body: Mapping[str, Any]
    ) -> contextlib.AbstractContextManager[Span | None]:
        """One call to an LLM upstream, named and tagged as OpenTelemetry's
        generative AI conventions say."""
        if self._tracer is None:
            return _NO_SPAN
        attributes = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model,
            "gptmini.upstream": upstream,
            "gen_ai.request.max_tokens": body.get("max_tokens"),
            "gen_ai.request.temperature": body.get("temperature"),
            "gptmini.stream": bool(body.get("stream")),
        }
        return self.span(
            f"chat {model}",
            {name: value for name, value in attributes.items() if value is not None},
            client=True,
        )

    def describe_current(
        self, name: str, attributes: Mapping[str, Any], error: str | None
    ) -> None:
        """Rename the current span (the request's) and tag it; `error`: why
        it failed, if it did."""
        if self._tracer is None:
            return
        from opentelemetry import trace

        current = trace.get_current_span()
        if not current.is_recording():
            return
        current.update_name(name)
        annotate(current, **attributes)
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            current.set_status(Status(StatusCode.ERROR, error))

    @staticmethod
    def annotate(span: Span | None, **attributes: Any) -> None:
        annotate(span, **attributes)

    def start_detached(
        self, name: str, attributes: Mapping[str, Any]
    ) -> DetachedSpan | None:
        """A span made current now and ended by hand (None when off)."""
        return DetachedSpan(self, name, attributes) if self._tracer else None


def annotate(span: Span | None, **attributes: Any) -> None:
    if span is not None:
        span.set_attributes(
            {name: value for name, value in attributes.items() if value is not None}
        )


def _otlp_exporter() -> SpanExporter:
    env = os.environ
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            logger.warning(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package "
                "opentelemetry-exporter-otlp-proto-grpc; sending OTLP over HTTP"
            )
        else:
            exporter: SpanExporter = GrpcExporter()
            return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class DetachedSpan:
    """A span current from its start to `end`, across whoever resumes the
    code in between (a subscription is an async generator): the context it
    replaced is put back when it ends (not reset with a token, which would
    fail if the two ran in different contexts)."""

    def __init__(
        self, tracing: Tracing, name: str, attributes: Mapping[str, Any]
    ) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        assert tracing._tracer is not None
        self._previous = otel_context.get_current()
        self.span = tracing._tracer.start_span(name, attributes=attributes)
        otel_context.attach(trace.set_span_in_context(self.span))

    def end(self, attributes: Mapping[str, Any], error: str | None) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Status, StatusCode

        annotate(self.span, **attributes)
        if error is not None:
            self.span.set_status(Status(StatusCode.ERROR, error))
        self.span.end()
        otel_context.attach(self._previous)


# --- HTTP ------------------------------------------------------------------------


class TracingMiddleware:
    """A SERVER span per HTTP request, current while the app answers it.

    Inside RequestIdMiddleware, whose request id it records.
    """

    def __init__(self, app: ASGIApp, tracing: Tracing) -> None:
        self.app = app
        assert tracing._tracer is not None
        self.tracer = tracing._tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        from opentelemetry import context as otel_context
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        parent = propagate.extract(headers)
        method = scope["method"]
        server = self.tracer.start_span(
            f"{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
                "gptmini.request_id": scope.get("state", {}).get("request_id", ""),
            },
        )
        token = otel_context.attach(trace.set_span_in_context(server, parent))
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        except BaseException as error:
            server.record_exception(error)
            raise
        finally:
            route = route_template(scope)
            server.set_attributes(
                {"http.route": route, "http.response.status_code": status}
            )
            # Unless the operation step named it (a span the sampler dropped
            # has no name, and records nothing anyway).
            if getattr(server, "name", method) == method:
                server.update_name(f"{method} {route}")
            if status >= 500:
                server.set_status(Status(StatusCode.ERROR))
            otel_context.detach(token)
            server.end()
