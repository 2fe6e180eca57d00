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

Off, the opentelemetry packages are not even imported: `span()` hands out one
shared no-op context manager and the middleware is not installed.
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

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

    from gptmini_graphql.context import RequestContext
    from gptmini_graphql.llm.answers import ChatStreamEnd

logger = logging.getLogger("gptmini_graphql.tracing")

SERVICE_NAME = "gptmini-graphql"
# Probes and scrapes would bury the requests worth looking at.
UNTRACED_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})

_tracer: Tracer | None = None
_provider: TracerProvider | None = None
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


def enabled() -> bool:
    return _tracer is not None


def setup(exporter: SpanExporter | None = None) -> bool:
    """Start tracing if the environment asks for it, or to `exporter` (each
    span as it ends: how tests read them); idempotent. True when on."""
    global _tracer, _provider
    if _tracer is not None:
        return True
    if exporter is None and not configured():
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    # Not the global provider: ours alone, so it can be stopped and replaced.
    # It flushes its last spans when the process exits.
    provider = TracerProvider(resource=resource)
    if exporter is None:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer("gptmini_graphql", __version__)
    logger.info(
        "tracing on", extra={"service_name": resource.attributes.get("service.name")}
    )
    return True


def shutdown() -> None:
    """Flush what is left and stop tracing."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


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
            return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def middleware() -> list[Middleware]:
    """The tracing middleware, when tracing is on: for the app's list."""
    return [Middleware(TracingMiddleware)] if _tracer is not None else []


def span(
    name: str, attributes: Mapping[str, Any] | None = None, *, client: bool = False
) -> contextlib.AbstractContextManager[Span | None]:
    """A child span of the current one for the block (None inside when off)."""
    if _tracer is None:
        return _NO_SPAN
    from opentelemetry.trace import SpanKind

    return _tracer.start_as_current_span(
        name,
        attributes=attributes,
        kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
    )


def annotate(span: Span | None, **attributes: Any) -> None:
    if span is not None:
        span.set_attributes(
            {name: value for name, value in attributes.items() if value is not None}
        )


def upstream_span(
    upstream: str, model: str, body: Mapping[str, Any]
) -> contextlib.AbstractContextManager[Span | None]:
    """One call to an LLM upstream, named and tagged as OpenTelemetry's
    generative AI conventions say."""
    if _tracer is None:
        return _NO_SPAN
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": model,
        "gptmini.upstream": upstream,
        "gen_ai.request.max_tokens": body.get("max_tokens"),
        "gen_ai.request.temperature": body.get("temperature"),
        "gptmini.stream": bool(body.get("stream")),
    }
    return span(
        f"chat {model}",
        {name: value for name, value in attributes.items() if value is not None},
        client=True,
    )


# --- GraphQL ------------------------------------------------------------------


def annotate_operation(context: RequestContext, outcome: str) -> None:
    """What the operation of this HTTP request was, on its span."""
    if _tracer is None:
        return
    from opentelemetry import trace

    from gptmini_graphql.metrics import operation_label

    current = trace.get_current_span()
    if not current.is_recording():
        return
    results = context.results
    costs = [r.usage.cost_usd for r in results]
    operation = operation_label(context.root_fields)
    current.update_name(f"graphql {operation}")
    annotate(
        current,
        **{
            "gptmini.graphql.operation": operation,
            "graphql.operation.name": (context.operation_name or "")[:100] or None,
            "gptmini.graphql.fields": sorted(context.root_fields),
            "gptmini.outcome": outcome,
            "gen_ai.response.model": results[0].model if results else None,
            "gen_ai.usage.input_tokens": sum(r.usage.prompt_tokens for r in results),
            "gen_ai.usage.output_tokens": sum(
                r.usage.completion_tokens for r in results
            ),
            "gptmini.cost_usd": None if None in costs else sum(costs),
            "gptmini.cached": any(r.cached for r in results) if results else None,
        },
    )
    if outcome != "OK":
        from opentelemetry.trace import Status, StatusCode

        current.set_status(Status(StatusCode.ERROR, outcome))


class SubscriptionSpan:
    """The span of one subscription, current while it streams.

    A subscription is an async generator, resumed by whoever reads it: the
    span is made current when it starts and the context it replaced is put
    back when it ends (not reset with a token, which would fail if the two
    ran in different contexts).
    """

    def __init__(self, context: RequestContext, field: str) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        assert _tracer is not None
        self._previous = otel_context.get_current()
        self.span = _tracer.start_span(
            f"graphql subscription {field}",
            attributes={
                "gptmini.graphql.operation": field,
                "gptmini.request_id": context.request_id,
                "gptmini.transport": context.connection.scope["type"],
            },
        )
        otel_context.attach(trace.set_span_in_context(self.span))

    def end(
        self, outcome: str, stream_end: ChatStreamEnd | None, first_token: float | None
    ) -> None:
        """`first_token`: seconds to the first text delta, if one came."""
        from opentelemetry import context as otel_context
        from opentelemetry.trace import Status, StatusCode

        usage = stream_end.usage if stream_end else None
        annotate(
            self.span,
            **{
                "gptmini.outcome": outcome,
                "gptmini.time_to_first_token_ms": round(first_token * 1000, 2)
                if first_token is not None
                else None,
                "gen_ai.response.model": stream_end.model if stream_end else None,
                "gen_ai.usage.input_tokens": usage.prompt_tokens if usage else None,
                "gen_ai.usage.output_tokens": usage.completion_tokens
                if usage
                else None,
                "gptmini.cost_usd": usage.cost_usd if usage else None,
            },
        )
        if outcome not in ("OK", "CANCELLED"):
            self.span.set_status(Status(StatusCode.ERROR, outcome))
        self.span.end()
        otel_context.attach(self._previous)


def start_subscription(context: RequestContext, field: str) -> SubscriptionSpan | None:
    return SubscriptionSpan(context, field) if _tracer is not None else None


# --- HTTP ------------------------------------------------------------------------


class TracingMiddleware:
    """A SERVER span per HTTP request, current while the app answers it.

    Inside RequestIdMiddleware, whose request id it records.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        tracer = _tracer
        if tracer is None or scope["type"] != "http" or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send)
            return
        from opentelemetry import context as otel_context
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        from gptmini_graphql.metrics import route_template

        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
        }
        parent = propagate.extract(headers)
        method = scope["method"]
        server = tracer.start_span(
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
            # (A span the sampler dropped records nothing, attributes included.)
            named = getattr(server, "attributes", None) or {}
            if "gptmini.graphql.operation" not in named:
                server.update_name(f"{method} {route}")
            if status >= 500:
                server.set_status(Status(StatusCode.ERROR))
            otel_context.detach(token)
            server.end()
