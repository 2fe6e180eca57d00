"""OpenTelemetry tracing: the spans of an operation, recorded in memory; the
OTLP export the environment switches on; and nothing at all when it is off."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind, StatusCode

from gptmini_graphql.tracing import Tracing
from tests.conftest import API
from tests.fake_upstream import MODEL_SNAPSHOT, Reply, api_error
from tests.test_subscriptions import CHUNKS, stream_over_http, transport_ws

ROOT = Path(__file__).resolve().parent.parent
SUMMARIZE = "query Digest($t: String!) { summarize(text: $t) { text cached } }"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def make_api(
    make_api: Callable[..., API], spans: InMemorySpanExporter
) -> Callable[..., API]:
    """Apps traced into memory (`spans`): each its own tracer, made when the
    app is (after a test's own OTEL_* settings)."""

    def make(**options: object) -> API:
        if "tracing" not in options:
            options["tracing"] = Tracing.to(spans)
        return make_api(**options)

    return make


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent else None


def test_an_operation_has_a_span_with_cache_and_upstream_children(
    spans: InMemorySpanExporter, make_api: Callable[..., API]
) -> None:
    api = make_api(cache_ttl_seconds=60)
    token = api.login()
    spans.clear()
    api.post(SUMMARIZE, {"t": "traced"}, token, headers={"X-Request-ID": "req-1"})

    (operation,) = named(spans, "graphql summarize")
    assert operation.kind is SpanKind.SERVER
    assert operation.parent is None
    attributes = operation.attributes
    assert attributes["gptmini.request_id"] == "req-1"
    assert attributes["graphql.operation.name"] == "Digest"
    assert attributes["gptmini.outcome"] == "OK"
    assert attributes["http.route"] == "/graphql"
    assert attributes["http.response.status_code"] == 200
    assert attributes["gen_ai.response.model"] == MODEL_SNAPSHOT
    assert attributes["gen_ai.usage.input_tokens"] == 100
    assert attributes["gen_ai.usage.output_tokens"] == 20
    assert attributes["gptmini.cached"] is False

    (lookup,) = named(spans, "cache lookup")
    (call,) = named(spans, "chat gpt-4o-mini")
    for child in (lookup, call):
        assert parent_of(child) == operation.context.span_id
        assert child.context.trace_id == operation.context.trace_id
    assert lookup.attributes["gptmini.cache.hit"] is False
    assert lookup.attributes["gptmini.cache.backend"] == "memory"
    assert call.kind is SpanKind.CLIENT
    assert call.attributes["gptmini.upstream"] == "primary"
    assert call.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert call.end_time <= operation.end_time

    # The same request again: a cache hit, and no upstream call.
    spans.clear()
    api.post(SUMMARIZE, {"t": "traced"}, token, headers={"X-Request-ID": "req-2"})
    (operation,) = named(spans, "graphql summarize")
    assert operation.attributes["gptmini.request_id"] == "req-2"
    assert operation.attributes["gptmini.cached"] is True
    (lookup,) = named(spans, "cache lookup")
    assert lookup.attributes["gptmini.cache.hit"] is True
    assert named(spans, "chat gpt-4o-mini") == []


def test_a_failed_operation_and_upstream_call_are_errors(
    spans: InMemorySpanExporter, make_api: Callable[..., API]
) -> None:
    api = make_api()
    token = api.login()
    spans.clear()
    api.upstream.queue(api_error(503, "down"))
    api.post(SUMMARIZE, {"t": "failing"}, token)

    (operation,) = named(spans, "graphql summarize")
    assert operation.attributes["gptmini.outcome"] == "UPSTREAM_UNAVAILABLE"
    assert operation.status.status_code is StatusCode.ERROR
    (call,) = named(spans, "chat gpt-4o-mini")
    assert call.status.status_code is StatusCode.ERROR
    assert parent_of(call) == operation.context.span_id


def test_requests_the_sampler_drops_are_answered_all_the_same(
    monkeypatch: pytest.MonkeyPatch,
    spans: InMemorySpanExporter,
    make_api: Callable[..., API],
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    api = make_api(cache_ttl_seconds=60)
    token = api.login()
    for _ in range(2):
        result = api.post(SUMMARIZE, {"t": "unsampled"}, token)
        assert "errors" not in result, result
    stream_over_http(api, "sse", token, Reply(chunks=CHUNKS))
    assert spans.get_finished_spans() == ()


def test_two_apps_in_one_process_trace_apart(make_api: Callable[..., API]) -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    one = make_api(tracing=Tracing.to(first))
    two = make_api(tracing=Tracing.to(second))
    one.post("{ __typename }")
    two.post("query Other { __typename }")
    (mine,) = first.get_finished_spans()
    (theirs,) = second.get_finished_spans()
    assert "graphql.operation.name" not in mine.attributes
    assert theirs.attributes["graphql.operation.name"] == "Other"


def test_a_callers_traceparent_continues_its_trace(
    spans: InMemorySpanExporter, make_api: Callable[..., API]
) -> None:
    api = make_api()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    api.post(
        "{ __typename }",
        headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
    )
    (operation,) = named(spans, "graphql __typename")
    assert operation.context.trace_id == int(trace_id, 16)
    assert parent_of(operation) == int(parent_id, 16)


def test_probes_and_scrapes_are_not_traced(
    spans: InMemorySpanExporter, make_api: Callable[..., API]
) -> None:
    api = make_api()
    for path in ("/healthz", "/readyz", "/metrics"):
        api.client.get(path)
    assert api.client.get("/nowhere").status_code == 404
    assert [span.name for span in spans.get_finished_spans()] == ["GET unmatched"]


def test_a_subscription_over_sse_has_its_span_under_the_request(
    spans: InMemorySpanExporter, make_api: Callable[..., API]
) -> None:
    api = make_api()
    token = api.login()
    spans.clear()
    stream_over_http(api, "sse", token, Reply(chunks=CHUNKS))

    (request,) = named(spans, "POST /graphql")
    (stream,) = named(spans, "graphql subscription completeStream")
    (call,) = named(spans, "chat gpt-4o-mini")
    assert parent_of(stream) == request.context.span_id
    assert parent_of(call) == stream.context.span_id
    assert stream.attributes["gptmini.outcome"] == "OK"
    assert stream.attributes["gptmini.transport"] == "http"
    assert stream.attributes["gen_ai.usage.output_tokens"] == len(CHUNKS)
    assert stream.attributes["gptmini.time_to_first_token_ms"] >= 0
    assert call.attributes["gptmini.stream"] is True


def test_a_subscription_over_websocket_is_a_trace_of_its_own(
    spans: InMemorySpanExporter, make_api: Callable[..., API]
) -> None:
    api = make_api()
    token = api.login()
    spans.clear()
    api.upstream.queue(Reply(chunks=CHUNKS))
    with transport_ws(api, token) as ws:
        ws.subscribe("1")
        while ws.receive()["type"] != "complete":
            pass

    (stream,) = named(spans, "graphql subscription completeStream")
    (call,) = named(spans, "chat gpt-4o-mini")
    assert stream.parent is None
    assert stream.attributes["gptmini.transport"] == "websocket"
    assert stream.attributes["gptmini.request_id"]
    assert parent_of(call) == stream.context.span_id


# --- the environment switches it on, or leaves it off -------------------------------

APP = textwrap.dedent(
    """
    import sys
    from starlette.testclient import TestClient
    from gptmini_graphql import tracing
    from gptmini_graphql.app import create_app
    from tests.conftest import API, make_settings
    from tests.fake_upstream import FakeUpstream

    upstream = FakeUpstream()
    app = create_app(make_settings(), llm_http_client=upstream.http_client())
    with TestClient(app) as client:
        api = API(client, upstream)
        token = api.login()
        result = api.post("query { summarize(text: \\"x\\") { text } }", token=token)
        assert "errors" not in result, result
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")
    traced = any(m.cls is tracing.TracingMiddleware for m in app.user_middleware)
    print(len(loaded), traced)
    """
)


def run_app(**env: str) -> list[str]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("OTEL_", "PROMETHEUS_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", APP],
        cwd=ROOT,
        env={**environment, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_off_without_an_endpoint_and_free() -> None:
    """Not one opentelemetry module is imported, so not one span is made."""
    assert run_app() == ["0", "False"]
    disabled = run_app(
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_SDK_DISABLED="true"
    )
    assert disabled == ["0", "False"]


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """An OTLP/HTTP collector on a free loopback port, keeping what it gets."""
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Collector.received
    server.shutdown()
    server.server_close()


def test_an_otlp_endpoint_turns_it_on_and_spans_reach_the_collector(
    collector: tuple[str, list[tuple[str, bytes]]],
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    url, received = collector
    modules, traced = run_app(
        OTEL_EXPORTER_OTLP_ENDPOINT=url, OTEL_SERVICE_NAME="gptmini-test"
    )
    assert traced == "True" and int(modules) > 0
    assert received, "no spans were exported"  # flushed when the process ended
    names, services = [], set()
    for path, body in received:
        assert path == "/v1/traces"
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for attribute in resource_spans.resource.attributes:
                if attribute.key == "service.name":
                    services.add(attribute.value.string_value)
            for scope_spans in resource_spans.scope_spans:
                names += [span.name for span in scope_spans.spans]
    assert services == {"gptmini-test"}
    assert {"graphql login", "graphql summarize", "chat gpt-4o-mini"} <= set(names)
