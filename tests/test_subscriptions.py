"""Streaming completions over GraphQL subscriptions (`completeStream`).

The fake upstream streams Chat Completions chunks. WebSocket tests use a real
graphql-transport-ws client (gql) against the app served by uvicorn, except
where a test needs the frames themselves (close codes, a bare `complete`):
those speak the protocol over Starlette's test WebSocket. SSE and multipart
are plain HTTP: their bodies are parsed here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
import strawberry
import uvicorn
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from graphql import parse
from starlette.testclient import TestClient, WebSocketTestSession
from starlette.websockets import WebSocketDisconnect
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionResult

from gptmini_graphql.app import create_app
from gptmini_graphql.auth.tokens import key_id
from gptmini_graphql.schema import events
from gptmini_graphql.schema.executor import CodedExecutor
from gptmini_graphql.settings import DEFAULT_JWT_SECRET
from tests.conftest import API, LOGIN, Clock, error_codes, make_settings
from tests.fake_upstream import MODEL_SNAPSHOT, FakeUpstream, Reply

STREAM = """
subscription Stream($prompt: String!, $maxTokens: Int) {
  completeStream(prompt: $prompt, maxTokens: $maxTokens) {
    text
    done
    finishReason
    model
    notice
    usage { promptTokens completionTokens cachedTokens totalTokens costUsd }
  }
}
"""
PROMPT = {"prompt": "Tell me a story."}
CHUNKS = ["Once ", "upon ", "a ", "time"]
# gpt-4o-mini: $0.15 per 1M input tokens, $0.60 per 1M output tokens; the fake
# upstream reports 10 prompt tokens and one completion token per chunk.
COST = (10 * 0.15 + len(CHUNKS) * 0.60) / 1e6
# Slow enough that a test acts between two chunks, and far from the end.
SLOW = Reply(chunks=["word "] * 20, chunk_delay=0.2)


# --- the app served by uvicorn, for gql and for real HTTP disconnects ------


@dataclass
class Served:
    url: str
    token: str

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")


@pytest.fixture
def serve(upstream: FakeUpstream) -> Iterator[Callable[..., Served]]:
    """Starts the app with these settings on a free loopback port."""
    running: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(**overrides: Any) -> Served:
        app = create_app(
            make_settings(**overrides), llm_http_client=upstream.http_client()
        )
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        thread.start()
        running.append((server, thread, sock))
        eventually(lambda: server.started, "the server did not start")
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/graphql"
        login = {"username": "test_user", "password": "1234"}
        answer = httpx.post(url, json={"query": LOGIN, "variables": login})
        return Served(url, answer.json()["data"]["login"]["accessToken"])

    yield start
    for server, thread, sock in running:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass
class Received:
    """What a gql subscription got: its events, then its errors if any."""

    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] | None = None

    @property
    def codes(self) -> list[str]:
        return [error["extensions"]["code"] for error in self.errors or ()]


async def _subscribe(session: Any, variables: dict[str, Any]) -> Received:
    received = Received()
    request = GraphQLRequest(STREAM, variable_values=variables)
    try:
        async for data in session.subscribe(request):
            received.events.append(data["completeStream"])
    except TransportQueryError as error:
        received.errors = error.errors
    return received


def subscribe_ws(served: Served, *variables: dict[str, Any]) -> list[Received]:
    """Runs these subscriptions one after another on one gql connection."""

    async def run() -> list[Received]:
        transport = WebsocketsTransport(
            url=served.ws_url,
            init_payload={"Authorization": f"Bearer {served.token}"},
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
        )
        async with asyncio.timeout(10), Client(transport=transport) as session:
            return [await _subscribe(session, each) for each in variables]

    return asyncio.run(run())


# --- frame-level graphql-transport-ws, over Starlette's test WebSocket -----


class TransportWS:
    """The client side of graphql-transport-ws, one frame at a time."""

    def __init__(self, ws: WebSocketTestSession) -> None:
        self.ws = ws

    def init(self, payload: dict[str, Any] | None) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        self.ws.send_json(message)
        return self.ws.receive_json()

    def subscribe(self, id: str, variables: dict[str, Any] = PROMPT) -> None:
        payload = {"query": STREAM, "variables": variables}
        self.ws.send_json({"id": id, "type": "subscribe", "payload": payload})

    def complete(self, id: str) -> None:
        self.ws.send_json({"id": id, "type": "complete"})

    def receive(self) -> dict[str, Any]:
        return self.ws.receive_json()


@contextmanager
def transport_ws(api: API, token: str) -> Iterator[TransportWS]:
    """A connection that has been acknowledged for this token."""
    with api.client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:
        client = TransportWS(ws)
        assert client.init({"Authorization": f"Bearer {token}"}) == {
            "type": "connection_ack"
        }
        yield client


# --- SSE and multipart bodies ---------------------------------------------

ACCEPT = {
    "sse": "text/event-stream",
    # What Apollo Client sends for a subscription over HTTP.
    "multipart": 'multipart/mixed;boundary="graphql";subscriptionSpec=1.0,application/json',
}


def stream_over_http(
    api: API, transport: str, token: str, reply: Reply | None = None
) -> list[dict[str, Any]]:
    """The payloads (`{data, errors}`) of one subscription over SSE or multipart."""
    if reply is not None:
        api.upstream.queue(reply)
    response = api.client.post(
        "/graphql",
        json={"query": STREAM, "variables": PROMPT},
        headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT[transport]},
    )
    assert response.status_code == 200, response.text
    content_type = response.headers["content-type"]
    if transport == "sse":
        assert content_type == "text/event-stream"
        *events, last = sse_events(response.text)
        assert last == ("complete", None)
        assert {name for name, _ in events} == {"next"}
        return [data for _, data in events]
    assert content_type.startswith("multipart/mixed;boundary=graphql;")
    assert response.text.endswith("\r\n--graphql--\r\n")
    return multipart_payloads(response.text)


def test_an_events_json_is_encoded_as_strawberry_encodes_it(
    api: API, token: str
) -> None:
    # Escapes, non-ASCII and a float, as json.dumps(separators=(",", ":"))
    # writes them (BaseView.encode_json): byte for byte, not just parsed alike.
    api.upstream.queue(Reply(chunks=['"é\n😀\\</script>', "\u2028 "]))
    response = api.client.post(
        "/graphql",
        json={"query": STREAM, "variables": PROMPT},
        headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT["sse"]},
    )
    lines = [
        line.removeprefix("data: ")
        for line in response.text.split("\r\n")
        if line.startswith("data: {")
    ]
    assert len(lines) == 3
    for line in lines:
        assert line == json.dumps(json.loads(line), separators=(",", ":"))
    assert "\\u00e9\\n\\ud83d\\ude00" in lines[0]


def test_a_usage_selection_refused_by_its_variables_costs_only_the_last_event(
    api: API, token: str, capfd: pytest.CaptureFixture
) -> None:
    # `usage` is null on every delta, so graphql-core never collects its
    # selection there: only the last event (usage set) carries the error.
    query = """
      subscription S($prompt: String!, $v: Boolean = true) {
        completeStream(prompt: $prompt) {
          text usage { completionTokens @include(if: $v) }
        }
      }
    """
    api.upstream.queue(Reply(chunks=["a ", "b"]))
    response = api.client.post(
        "/graphql",
        json={"query": query, "variables": {"prompt": "x", "v": None}},
        headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT["sse"]},
    )
    events = [data for name, data in sse_events(response.text) if name == "next"]
    assert [event.get("data") for event in events[:2]] == [
        {"completeStream": {"text": "a ", "usage": None}},
        {"completeStream": {"text": "b", "usage": None}},
    ]
    assert all("errors" not in event for event in events[:2])
    assert "errors" in events[-1]
    # The caller's mistake, answered to the caller: no error in our logs.
    assert "subscription not planned" not in capfd.readouterr().err


def sse_events(body: str) -> list[tuple[str, Any]]:
    """(event, data) pairs of a graphql-sse body; comments (pings) dropped."""
    events = []
    for block in body.split("\r\n\r\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line
        )
        if "event" in fields:
            data = fields.get("data")
            events.append((fields["event"], json.loads(data) if data else None))
    return events


def multipart_payloads(body: str) -> list[dict[str, Any]]:
    """The payloads of an Apollo multipart subscription body, heartbeats dropped."""
    payloads = []
    for part in body.split("\r\n--graphql"):
        _, blank, content = part.partition("\r\n\r\n")
        if blank and content.strip():
            message = json.loads(content)
            if message:  # `{}` is a heartbeat
                payloads.append(message["payload"])
    return payloads


# --- helpers ---------------------------------------------------------------


def eventually(check: Callable[[], object], what: str, seconds: float = 3) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


class Logs:
    """The JSON log lines written so far (they go to stderr)."""

    def __init__(self, capfd: pytest.CaptureFixture) -> None:
        self.capfd = capfd
        self.lines: list[dict[str, Any]] = []

    def of(self, message: str) -> list[dict[str, Any]]:
        err = self.capfd.readouterr().err
        self.lines += [json.loads(x) for x in err.splitlines() if x.startswith("{")]
        return [line for line in self.lines if line["message"] == message]

    def forget(self) -> None:
        """Drop what was logged so far."""
        self.of("")
        self.lines.clear()

    def wait_for(self, message: str) -> dict[str, Any]:
        eventually(lambda: self.of(message), f"no {message!r} log line")
        (line,) = self.of(message)
        return line


@pytest.fixture
def logs(capfd: pytest.CaptureFixture) -> Logs:
    """Make the app in the test's body (`make_api`, `serve`): its log handler
    writes to a copy of stderr taken when the app is made, and only from the
    test's call on is that stderr the one captured here."""
    return Logs(capfd)


def _expired_token() -> str:
    now = int(time.time())
    claims = {"sub": str(uuid.uuid4()), "sid": str(uuid.uuid4()), "jti": "x"}
    claims |= {"iat": now - 7200, "exp": now - 3600}
    headers = {"kid": key_id(DEFAULT_JWT_SECRET)}
    return jwt.encode(claims, DEFAULT_JWT_SECRET, "HS256", headers=headers)


# --- the stream ------------------------------------------------------------


def test_deltas_arrive_in_order_then_the_upstreams_usage(
    serve: Callable[..., Served], upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(chunks=CHUNKS))
    (received,) = subscribe_ws(serve(), PROMPT)

    assert received.errors is None
    *deltas, last = received.events
    assert [event["text"] for event in deltas] == CHUNKS
    assert not any(event["done"] for event in deltas)
    assert last == {
        "text": "",
        "done": True,
        "finishReason": "STOP",
        "model": MODEL_SNAPSHOT,
        "notice": None,
        "usage": {
            "promptTokens": 10,
            "completionTokens": len(CHUNKS),
            "cachedTokens": 0,
            "totalTokens": 10 + len(CHUNKS),
            "costUsd": pytest.approx(COST),
        },
    }
    assert upstream.last["stream"] is True
    assert upstream.last["stream_options"] == {"include_usage": True}


def test_one_log_line_per_stream_with_time_to_first_token_and_cost(
    logs: Logs, serve: Callable[..., Served], upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(chunks=CHUNKS, chunk_delay=0.01))
    subscribe_ws(serve(), PROMPT)

    line = logs.wait_for("graphql subscription")
    assert line["level"] == "INFO"
    assert line["user"] == "test_user"
    assert line["field"] == "completeStream"
    assert line["model"] == MODEL_SNAPSHOT
    assert line["outcome"] == "OK"
    assert line["chunks"] == len(CHUNKS)
    assert line["prompt_tokens"] == 10
    assert line["completion_tokens"] == len(CHUNKS)
    assert line["cost_usd"] == pytest.approx(COST)
    assert line["usage_missing"] is False
    assert 0 < line["time_to_first_token_ms"] <= line["latency_ms"]
    assert "Tell me a story" not in json.dumps(line)


def test_a_stream_without_usage_says_so_instead_of_reporting_zero(
    logs: Logs, serve: Callable[..., Served], upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(chunks=CHUNKS, stream_usage=False))
    (received,) = subscribe_ws(serve(), PROMPT)

    last = received.events[-1]
    assert last["done"] is True
    assert last["usage"] is None
    assert "usage" in last["notice"]
    line = logs.wait_for("graphql subscription")
    assert line["usage_missing"] is True
    assert line["outcome"] == "OK"
    assert line["cost_usd"] is None


# --- cancellation ----------------------------------------------------------


def test_unsubscribing_closes_the_upstream_stream(
    logs: Logs, make_api: Callable[..., API], upstream: FakeUpstream
) -> None:
    api = make_api()
    upstream.queue(SLOW)
    with transport_ws(api, api.login()) as ws:
        ws.subscribe("1")
        assert ws.receive()["payload"]["data"]["completeStream"]["text"] == "word "
        ws.complete("1")
        eventually(lambda: upstream.disconnects == 1, "upstream left open")

        line = logs.wait_for("graphql subscription")
        assert line["outcome"] == "CANCELLED"
        assert 1 <= line["chunks"] < len(SLOW.chunks)
        assert line["completion_tokens"] is None  # usage comes only at the end


def test_closing_the_socket_closes_the_upstream_stream(
    logs: Logs, make_api: Callable[..., API], upstream: FakeUpstream
) -> None:
    api = make_api()
    upstream.queue(SLOW)
    with transport_ws(api, api.login()) as ws:
        ws.subscribe("1")
        assert ws.receive()["type"] == "next"
    eventually(lambda: upstream.disconnects == 1, "upstream left open")

    line = logs.wait_for("graphql subscription")
    assert line["outcome"] == "CANCELLED"
    assert 1 <= line["chunks"] < len(SLOW.chunks)


@pytest.mark.parametrize("transport", ACCEPT)
def test_an_http_client_leaving_closes_the_upstream_stream(
    logs: Logs, serve: Callable[..., Served], upstream: FakeUpstream, transport: str
) -> None:
    served = serve()
    upstream.queue(SLOW)
    headers = {"Authorization": f"Bearer {served.token}", "Accept": ACCEPT[transport]}
    body = {"query": STREAM, "variables": PROMPT}
    with httpx.stream("POST", served.url, json=body, headers=headers) as response:
        assert any("word " in line for line in response.iter_lines())
    eventually(lambda: upstream.disconnects == 1, "upstream left open")

    line = logs.wait_for("graphql subscription")
    assert line["outcome"] == "CANCELLED"


# --- failures --------------------------------------------------------------


def test_an_upstream_cut_mid_stream_is_an_error_not_an_end(
    logs: Logs, serve: Callable[..., Served], upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(chunks=CHUNKS, cut_after=2))
    (received,) = subscribe_ws(serve(), PROMPT)

    assert [event["text"] for event in received.events] == CHUNKS[:2]
    assert not any(event["done"] for event in received.events)
    assert received.codes == ["UPSTREAM_UNAVAILABLE"]
    line = logs.wait_for("graphql subscription")
    assert line["outcome"] == "UPSTREAM_UNAVAILABLE"
    assert line["level"] == "WARNING"
    assert line["chunks"] == 2


def test_over_graphql_transport_ws_the_error_is_a_next_then_complete(
    api: API, token: str, upstream: FakeUpstream
) -> None:
    """What Apollo's and urql's graphql-ws links turn into an error."""
    upstream.queue(Reply(chunks=CHUNKS, cut_after=1))
    with transport_ws(api, token) as ws:
        ws.subscribe("1")
        assert ws.receive()["payload"]["data"]["completeStream"]["text"] == "Once "
        assert ws.receive() == {
            "id": "1",
            "type": "next",
            "payload": {
                "data": None,
                "errors": [
                    {
                        "message": "The model server could not be reached.",
                        "extensions": {"code": "UPSTREAM_UNAVAILABLE"},
                    }
                ],
            },
        }
        assert ws.receive() == {"id": "1", "type": "complete"}


def test_a_stalled_upstream_is_upstream_timeout(
    serve: Callable[..., Served], upstream: FakeUpstream
) -> None:
    upstream.queue(Reply(chunks=CHUNKS, chunk_delay=1.0))
    (received,) = subscribe_ws(serve(llm_timeout_seconds=0.1), PROMPT)

    assert received.events == []
    assert received.codes == ["UPSTREAM_TIMEOUT"]


@pytest.mark.parametrize(
    ("variables", "code"),
    [
        ({"prompt": "   "}, "BAD_USER_INPUT"),
        ({"prompt": "hi", "maxTokens": 0}, "BAD_USER_INPUT"),
        ({"prompt": "hi", "maxTokens": "many"}, "BAD_USER_INPUT"),
    ],
    ids=["blank prompt", "maxTokens out of range", "maxTokens not an Int"],
)
def test_bad_arguments_are_refused_before_the_upstream_is_asked(
    serve: Callable[..., Served],
    upstream: FakeUpstream,
    variables: dict[str, Any],
    code: str,
) -> None:
    (received,) = subscribe_ws(serve(), variables)

    assert received.events == []
    assert received.codes == [code]
    assert upstream.requests == []


def test_a_refused_stream_is_logged_with_its_code(
    logs: Logs, serve: Callable[..., Served]
) -> None:
    subscribe_ws(serve(), {"prompt": "hi", "maxTokens": 0})

    line = logs.wait_for("graphql subscription")
    assert line["outcome"] == "BAD_USER_INPUT"
    assert line["level"] == "WARNING"
    assert line["chunks"] == 0


# --- auth and limits -------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Basic dGVzdDoxMjM0"},
        {"Authorization": f"Bearer {_expired_token()}"},
    ],
    ids=["no payload", "no token", "bad token", "not bearer", "expired token"],
)
def test_a_connection_without_a_good_token_is_closed_forbidden(
    api: API, payload: dict[str, Any] | None
) -> None:
    with api.client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:
        with pytest.raises(WebSocketDisconnect) as closed:
            TransportWS(ws).init(payload)
        assert closed.value.code == 4403
    assert api.upstream.requests == []


def test_subscriptions_past_the_per_connection_cap_are_rate_limited(
    make_api: Callable[..., API], upstream: FakeUpstream
) -> None:
    api = make_api(max_subscriptions_per_connection=1)
    upstream.queue(SLOW)
    with transport_ws(api, api.login()) as ws:
        ws.subscribe("1")
        assert ws.receive()["type"] == "next"
        ws.subscribe("2")
        refusal = ws.receive()
        assert refusal["id"] == "2"
        assert refusal["type"] == "error"
        assert [error["extensions"]["code"] for error in refusal["payload"]] == [
            "RATE_LIMITED"
        ]
        ws.complete("1")
    assert len(upstream.requests) == 1


def test_each_subscription_counts_once_against_the_rate_limit(
    serve: Callable[..., Served], upstream: FakeUpstream
) -> None:
    # Login is not an LLM field: the two streams of 4 events each use it all.
    served = serve(rate_limit="2/minute")
    first, second, third = subscribe_ws(served, PROMPT, PROMPT, PROMPT)

    assert first.errors is None and first.events[-1]["done"]
    assert second.errors is None and second.events[-1]["done"]
    assert third.codes == ["RATE_LIMITED"]
    assert third.events == []
    assert len(upstream.requests) == 2


# --- SSE and multipart HTTP ------------------------------------------------


@pytest.mark.parametrize("transport", ACCEPT)
def test_http_transports_deliver_the_same_events(
    api: API, token: str, transport: str
) -> None:
    payloads = stream_over_http(api, transport, token, Reply(chunks=CHUNKS))

    chunks = [payload["data"]["completeStream"] for payload in payloads]
    assert [chunk["text"] for chunk in chunks] == [*CHUNKS, ""]
    assert chunks[-1]["done"] is True
    assert chunks[-1]["usage"]["costUsd"] == pytest.approx(COST)


SHAPED = """
subscription Shaped($prompt: String!, $withUsage: Boolean!) {
  completeStream(prompt: $prompt) {
    __typename
    delta: text
    ...End
    usage @include(if: $withUsage) { __typename completionTokens tokens: totalTokens }
    model @skip(if: true)
  }
}
fragment End on CompletionChunk { done finishReason }
"""


@pytest.mark.parametrize("transport", ["websocket", *ACCEPT])
def test_each_event_has_the_shape_its_selection_asks_for(
    api: API, token: str, transport: str
) -> None:
    """Aliases, fragments, __typename, @include and @skip, in the order the
    selection gives them, on every event and over every transport."""
    api.upstream.queue(Reply(chunks=CHUNKS))
    variables = {**PROMPT, "withUsage": True}
    if transport == "websocket":
        with transport_ws(api, token) as ws:
            payload = {"query": SHAPED, "variables": variables}
            ws.ws.send_json({"id": "1", "type": "subscribe", "payload": payload})
            payloads = [ws.receive()["payload"] for _ in range(len(CHUNKS) + 1)]
            assert ws.receive() == {"id": "1", "type": "complete"}
    else:
        response = api.client.post(
            "/graphql",
            json={"query": SHAPED, "variables": variables},
            headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT[transport]},
        )
        payloads = (
            [data for _, data in sse_events(response.text)[:-1]]
            if transport == "sse"
            else multipart_payloads(response.text)
        )

    events = [payload["data"]["completeStream"] for payload in payloads]
    assert [list(event) for event in events] == [
        ["__typename", "delta", "done", "finishReason", "usage"]
    ] * (len(CHUNKS) + 1)
    assert events[0] == {
        "__typename": "CompletionChunk",
        "delta": CHUNKS[0],
        "done": False,
        "finishReason": None,
        "usage": None,
    }
    assert events[-1]["finishReason"] == "STOP"
    assert events[-1]["usage"] == {
        "__typename": "Usage",
        "completionTokens": len(CHUNKS),
        "tokens": 10 + len(CHUNKS),
    }


def test_every_event_says_what_the_budgets_have_left(
    make_api: Callable[..., API],
) -> None:
    api = make_api(budget_usd_per_month=1.0, budget_tokens_per_day=10_000)
    payloads = stream_over_http(api, "sse", api.login(), Reply(chunks=CHUNKS))

    budgets = [payload["extensions"]["budgets"] for payload in payloads]
    assert len(budgets) == len(CHUNKS) + 1
    assert all(each == budgets[0] for each in budgets)
    assert budgets[0]["user.tokens_per_day"]["limit"] == 10_000


def _budgeted_event_lines(make_api: Callable[..., API], chunks: list[str]) -> list[str]:
    """The JSON of each event of a stream of `chunks` over SSE, with budgets
    (so each event carries them as extensions), as the server wrote it."""
    api = make_api(budget_usd_per_month=1.0, budget_tokens_per_day=10_000)
    api.upstream.queue(Reply(chunks=chunks))
    response = api.client.post(
        "/graphql",
        json={"query": STREAM, "variables": PROMPT},
        headers={"Authorization": f"Bearer {api.login()}", "Accept": ACCEPT["sse"]},
    )
    return [
        line.removeprefix("data: ")
        for line in response.text.split("\r\n")
        if line.startswith("data: {")
    ]


def test_events_with_budgets_are_encoded_as_strawberry_encodes_them(
    make_api: Callable[..., API],
) -> None:
    """Byte for byte (an event's extensions are encoded once per stream):
    data first, then extensions, as json.dumps(separators=(",", ":"))."""
    lines = _budgeted_event_lines(make_api, CHUNKS)
    assert len(lines) == len(CHUNKS) + 1
    for line in lines:
        event = json.loads(line)
        assert list(event) == ["data", "extensions"]
        assert line == json.dumps(event, separators=(",", ":"))


def test_escapes_in_events_with_budgets_are_json_dumps_own(
    make_api: Callable[..., API],
) -> None:
    """The data of an event with budgets is written into its JSON around
    them (event_stream.ResultJSON): quotes, backslashes, control and
    non-ASCII characters, a lone surrogate, escaped as json.dumps escapes
    them, byte for byte."""
    chunks = ['"q\\b\n\x00\x1f\x7f', "é😀\u2028</script>", "\ud800 lone"]
    lines = _budgeted_event_lines(make_api, chunks)
    events = [json.loads(line) for line in lines]
    assert [e["data"]["completeStream"]["text"] for e in events[:-1]] == chunks
    for line, event in zip(lines, events, strict=True):
        assert list(event) == ["data", "extensions"]
        assert line == json.dumps(event, separators=(",", ":"))


@pytest.mark.parametrize("transport", ACCEPT)
def test_http_transports_end_a_cut_stream_with_a_coded_error(
    api: API, token: str, transport: str
) -> None:
    reply = Reply(chunks=CHUNKS, cut_after=1)
    first, last = stream_over_http(api, transport, token, reply)

    assert first["data"]["completeStream"]["text"] == CHUNKS[0]
    assert last["data"] is None
    assert error_codes(last) == ["UPSTREAM_UNAVAILABLE"]


def test_a_multipart_stream_beats_while_the_model_is_slow(api: API, token: str) -> None:
    """Apollo's heartbeat, `{}`: first, then every 5 s whether or not
    results flow, and never after the end."""
    api.upstream.queue(Reply(chunks=["slow ", "words"], chunk_delay=3.5))
    response = api.client.post(
        "/graphql",
        json={"query": STREAM, "variables": PROMPT},
        headers={"Authorization": f"Bearer {token}", "Accept": ACCEPT["multipart"]},
    )

    heartbeat = "Content-Length: 2\r\n\r\n{}\r\n--graphql"
    assert response.text.startswith("\r\nContent-Type: application/json; charset=utf-8")
    assert response.text.index(heartbeat) < response.text.index("slow ")
    assert response.text.count(heartbeat) >= 2  # at 0 s and 5 s of 7
    assert response.text.endswith("\r\n--graphql--\r\n")
    texts = [
        p["data"]["completeStream"]["text"] for p in multipart_payloads(response.text)
    ]
    assert texts == ["slow ", "words", ""]


@pytest.mark.parametrize(
    "event",
    [
        b'data: {"choices": "not a list"}\n\n',
        b'data: ["not", "an", "object"]\n\n',
        b'data: {"choices": [], "usage": {"prompt_tokens": "many"}}\n\n',
        b'data: {"choices": [\n\n',  # not JSON
        b'data: {"choices": []} {"choices": []}\n\n',  # more than one value
        b"data: \xef\xbb\xbf{}\n\n",  # a byte-order mark before it
    ],
)
def test_a_malformed_stream_chunk_is_an_upstream_error(
    api: API, token: str, event: bytes
) -> None:
    finish = (
        b'data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}\n\n'
    )
    reply = Reply(raw_events=[finish, event, b"data: [DONE]\n\n"])
    *_, last = stream_over_http(api, "sse", token, reply)
    assert last["data"] is None
    assert error_codes(last) == ["UPSTREAM_ERROR"]


def _error_event(kind: str, message: str) -> bytes:
    """An error in the middle of a stream, as OpenAI and our embedded server send it."""
    error = {"message": message, "type": kind, "param": None, "code": None}
    return f"data: {json.dumps({'error': error})}\n\n".encode()


FIRST_CHUNK = b'data: {"choices": [{"index": 0, "delta": {"content": "Once "}}]}\n\n'


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (
            _error_event("server_error", "The local model failed."),
            "UPSTREAM_UNAVAILABLE",
        ),
        # An error that blames the request is still a refusal, reason shown.
        (
            _error_event("invalid_request_error", "Unsupported parameter: 'seed'"),
            "UPSTREAM_ERROR",
        ),
    ],
    ids=["server error", "refusal"],
)
def test_an_error_event_mid_stream_is_an_outage_unless_it_blames_the_request(
    api: API, token: str, event: bytes, code: str
) -> None:
    reply = Reply(raw_events=[FIRST_CHUNK, event])
    first, last = stream_over_http(api, "sse", token, reply)

    assert first["data"]["completeStream"]["text"] == "Once "
    assert last["data"] is None
    assert error_codes(last) == [code]


# Each way a stream can break after it opened (HTTP 200).
BROKEN_STREAMS = {
    "connection dropped": Reply(chunks=CHUNKS, cut_after=1),
    "error event": Reply(raw_events=[FIRST_CHUNK, _error_event("server_error", "x")]),
    "stalled": Reply(chunks=CHUNKS, chunk_delay=1.0),
    "ended before its finish_reason": Reply(
        raw_events=[FIRST_CHUNK, b"data: [DONE]\n\n"]
    ),
}


@pytest.mark.parametrize("broken", BROKEN_STREAMS.values(), ids=BROKEN_STREAMS)
def test_streams_broken_mid_answer_open_the_stream_circuit(
    make_api: Callable[..., API], broken: Reply
) -> None:
    api = make_api(
        circuit_breaker_failures=2,
        circuit_breaker_reset_seconds=600,
        llm_timeout_seconds=0.3,
    )
    token = api.login()
    for _ in range(2):
        *_, last = stream_over_http(api, "sse", token, broken)
        assert error_codes(last) in (["UPSTREAM_UNAVAILABLE"], ["UPSTREAM_TIMEOUT"])

    # Two in a row: streams are paused, and the upstream is not asked...
    (paused,) = stream_over_http(api, "sse", token)
    assert error_codes(paused) == ["UPSTREAM_UNAVAILABLE"]
    assert paused["errors"][0]["extensions"]["retryAfter"] > 0
    assert len(api.upstream.requests) == 2
    # ...while requests of another kind go on.
    answer = api.post('{ complete(prompt: "Hi") { text } }', token=token)
    assert answer["data"]["complete"]["text"] == "A short answer."


def test_a_client_slow_to_read_does_not_time_out_a_healthy_upstream(
    upstream: FakeUpstream,
) -> None:
    """A frame's send blocks (the client's socket full) while the next
    chunk's read has begun, for longer than a chunk may take: the send is
    not the upstream's time. The stream ends well, and its circuit, which
    one failure would open, stays closed."""
    app = create_app(
        make_settings(
            llm_timeout_seconds=0.2,
            circuit_breaker_failures=1,
            circuit_breaker_reset_seconds=600,
        ),
        llm_http_client=upstream.http_client(),
    )
    bodies = 0

    async def slow_to_read(scope: Any, receive: Any, send: Any) -> None:
        async def send_slowly(message: dict[str, Any]) -> None:
            nonlocal bodies
            if message["type"] == "http.response.body":
                bodies += 1
                if bodies == 2:  # the second delta's, as the third is read
                    await asyncio.sleep(1.0)
            await send(message)

        await app(scope, receive, send_slowly)

    with TestClient(slow_to_read) as client:
        api = API(client, upstream)
        token = api.login()
        bodies = 0  # the stream's, from here
        healthy = Reply(chunks=CHUNKS, chunk_delay=0.02)
        *deltas, last = stream_over_http(api, "sse", token, healthy)
        assert bodies > 2  # the second send was the slow one
        assert [d["data"]["completeStream"]["text"] for d in deltas] == CHUNKS
        assert "errors" not in last, last
        assert last["data"]["completeStream"]["done"] is True
        # Not paused: the upstream is asked again.
        *_, again = stream_over_http(api, "sse", token)
        assert "errors" not in again, again
        assert len(upstream.requests) == 2


@pytest.mark.parametrize("transport", ACCEPT)
def test_http_subscriptions_take_the_token_from_the_header(
    api: API, transport: str
) -> None:
    (refusal,) = stream_over_http(api, transport, "not.a.jwt")

    assert error_codes(refusal) == ["UNAUTHENTICATED"]
    assert api.upstream.requests == []


def test_a_stream_over_sse_logs_one_line_not_one_per_event(
    logs: Logs, make_api: Callable[..., API]
) -> None:
    api = make_api()
    token = api.login()
    logs.forget()
    stream_over_http(api, "sse", token, Reply(chunks=CHUNKS))

    line = logs.wait_for("graphql subscription")
    assert line["chunks"] == len(CHUNKS)
    assert logs.of("graphql operation") == []


def test_queries_and_mutations_still_log_one_operation_line_each(
    logs: Logs, make_api: Callable[..., API]
) -> None:
    api = make_api()
    token = api.login()
    logs.forget()
    api.post('{ complete(prompt: "hi") { text } }', token=token)
    api.login()

    lines = logs.of("graphql operation")
    assert [line["fields"] for line in lines] == [["complete"], ["login"]]
    assert logs.of("graphql subscription") == []


def test_a_token_that_expires_mid_connection_stops_opening_streams(make_api) -> None:
    clock = Clock()
    api = make_api(clock=clock, jwt_ttl_seconds=600)
    with transport_ws(api, api.login()) as client:
        clock.advance(601)
        client.subscribe("1")
        message = client.receive()
    assert message["type"] in ("next", "error")
    payload = message["payload"]
    errors = payload if isinstance(payload, list) else payload["errors"]
    assert [error["extensions"]["code"] for error in errors] == ["UNAUTHENTICATED"]
    assert api.upstream.requests == []


def test_queries_over_a_websocket_log_a_line_each_with_their_own_usage(
    make_api, logs: Logs
) -> None:
    api = make_api()
    token = api.login()
    with transport_ws(api, token) as client:
        for id, text in (("1", "first"), ("2", "second")):
            query = f'{{ summarize(text: "{text}") {{ text }} }}'
            client.ws.send_json(
                {"id": id, "type": "subscribe", "payload": {"query": query}}
            )
            assert client.receive()["type"] == "next"
            assert client.receive() == {"id": id, "type": "complete"}
    lines = logs.of("graphql operation")[-2:]
    assert [line["fields"] for line in lines] == [["summarize"], ["summarize"]]
    # Each its own tokens: the connection's context does not pile them up.
    assert [line["prompt_tokens"] for line in lines] == [100, 100]
    assert all(
        line["user"] == "test_user" and line["outcome"] == "OK" for line in lines
    )


# --- events read through a plan (schema/events.py) -------------------------


@strawberry.type
class Piece:
    text: str
    size: int | None = None
    done: bool | None = None

    @strawberry.field
    def shout(self) -> str:
        return self.text.upper()


class Loud(str):
    """A str, but not exactly: completed by the scalar, not passed as is."""


@strawberry.type
class Delegate:
    """Answers any attribute its class lacks, `__await__` too: graphql-core
    takes it for an awaitable (and fails to await it)."""

    text: str

    def __getattr__(self, name: str) -> Any:
        return self.text.upper


@strawberry.type
class Pieces:
    @strawberry.subscription
    async def delegates(self) -> AsyncGenerator[Delegate, None]:
        yield Delegate(text="a")

    @strawberry.subscription
    async def pieces(self) -> AsyncGenerator[Piece, None]:
        yield Piece(text="a", size=1, done=False)
        yield Piece(text=None, size=2)  # type: ignore[arg-type]  # null, non-null
        yield Piece(text="b", size="many")  # type: ignore[arg-type]  # not an Int
        yield Piece(text="c")
        # Values a String or a Boolean completes as something else.
        yield Piece(text=Loud("d"), done=1)  # type: ignore[arg-type]
        yield Piece(text=5, done=True)  # type: ignore[arg-type]
        yield Piece(text=True, done="yes")  # type: ignore[arg-type]


@strawberry.type
class NoQuery:
    nothing: str = ""


def _pieces(executor: type, query: str) -> list[tuple[Any, list[Any]]]:
    schema = strawberry.Schema(
        query=NoQuery, subscription=Pieces, execution_context_class=executor
    )

    async def run() -> list[tuple[Any, list[Any]]]:
        results = await schema.subscribe(query)
        assert not isinstance(results, ExecutionResult)
        return [
            (result.data, [error.formatted for error in result.errors or ()])
            async for result in results
        ]

    return asyncio.run(run())


@pytest.mark.parametrize(
    "query",
    [
        "subscription { pieces { __typename text size done } }",
        "subscription { pieces { text shout } }",  # a resolver: no plan
    ],
    ids=["planned", "unplanned"],
)
def test_events_the_plan_cannot_read_are_the_executors_own(query: str) -> None:
    ours = _pieces(CodedExecutor, query)

    assert ours == _pieces(StrawberryGraphQLCoreExecutionContext, query)
    assert len(ours) == 7 and ours[0][1] == [] and ours[1][1] != []


def test_an_event_that_answers_any_attribute_is_the_executors_own() -> None:
    query = "subscription { delegates { text } }"
    ours = _pieces(CodedExecutor, query)

    assert ours == _pieces(StrawberryGraphQLCoreExecutionContext, query)
    assert ours[0][0] is None and ours[0][1] != []


def test_a_plan_that_fails_leaves_every_event_to_the_executor(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(executor: Any) -> None:
        raise RuntimeError("a bug in planning")

    monkeypatch.setattr("gptmini_graphql.schema.executor.plan", broken)
    query = "subscription { pieces { __typename text size } }"
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("gptmini_graphql.graphql")
    logger.addHandler(handler)
    try:
        ours = _pieces(CodedExecutor, query)
    finally:
        logger.removeHandler(handler)

    assert ours == _pieces(StrawberryGraphQLCoreExecutionContext, query)
    assert ours[0] == ({"pieces": {"__typename": "Piece", "text": "a", "size": 1}}, [])
    # Planned once (its failure logged once), not again for every event.
    assert [record.getMessage() for record in records] == ["subscription not planned"]


class _OneDocumentPerText(SchemaExtension):
    """Each query text parsed once, as the app's parser cache does: every
    subscription of a text is handed the same nodes."""

    documents: dict[str, Any] = {}

    def on_parse(self) -> Iterator[None]:
        execution = self.execution_context
        assert execution.query is not None
        if execution.query not in self.documents:
            self.documents[execution.query] = parse(execution.query)
        execution.graphql_document = self.documents[execution.query]
        yield


def _schema(executor: type) -> strawberry.Schema:
    return strawberry.Schema(
        query=NoQuery,
        subscription=Pieces,
        execution_context_class=executor,
        extensions=[_OneDocumentPerText],
    )


def _subscribed(
    schema: strawberry.Schema, query: str, variables: dict[str, Any] | None = None
) -> list[Any]:
    async def run() -> list[Any]:
        results = await schema.subscribe(query, variable_values=variables)
        assert not isinstance(results, ExecutionResult)
        return [(result.data, result.errors) async for result in results]

    return asyncio.run(run())


def test_a_subscription_document_is_planned_once_for_all_its_streams(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planned: list[str] = []
    root_plan = events._root_plan

    def counted(executor: Any) -> Any:
        planned.append(executor.operation.name.value)
        return root_plan(executor)

    monkeypatch.setattr(events, "_root_plan", counted)
    query = "subscription Once { pieces { text size } }"
    schema = _schema(CodedExecutor)
    first = _subscribed(schema, query)

    assert _subscribed(schema, query) == first
    assert planned == ["Once"]
    # Another schema's subscriptions get a plan of its own.
    assert _subscribed(_schema(CodedExecutor), query) == first
    assert planned == ["Once", "Once"]


@pytest.mark.parametrize("with_size", [True, False])
def test_a_selection_variables_can_change_is_planned_for_each_stream(
    with_size: bool,
) -> None:
    query = (
        "subscription Sized($withSize: Boolean!) "
        "{ pieces { text ...Size } } "
        "fragment Size on Piece { size @include(if: $withSize) }"
    )
    schema = _schema(CodedExecutor)
    # Planned for the other value first: its plan must not be this one's.
    _subscribed(schema, query, {"withSize": not with_size})
    ours = _subscribed(schema, query, {"withSize": with_size})

    assert ours == _subscribed(
        _schema(StrawberryGraphQLCoreExecutionContext), query, {"withSize": with_size}
    )
    assert ("size" in ours[0][0]["pieces"]) is with_size
