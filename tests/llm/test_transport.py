"""The server's own HTTP client (llm/transport.py) against the fake upstream
over real HTTP: each way an upstream fails reaches the caller with the code
it has through httpx2's transport, and a stream the caller leaves is closed
at the upstream. (FAKE_UPSTREAM=http runs every test this way.)"""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from gptmini_graphql.app import create_app
from gptmini_graphql.llm.transport import AiohttpTransport
from tests.conftest import API, error_codes, make_settings
from tests.fake_upstream import (
    FakeUpstream,
    Reply,
    api_error,
    chat_completion,
    chunk_event,
)
from tests.test_subscriptions import (
    SLOW,
    eventually,
    stream_over_http,
    transport_ws,
)

SUMMARIZE = '{ summarize(text: "hello") { text } }'


@pytest.fixture
def over_http(upstream: FakeUpstream) -> Iterator[Callable[..., API]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> API:
        app = create_app(
            make_settings(**overrides),
            llm_http_client=upstream.http_client(over_http=True),
        )
        client = TestClient(app).__enter__()
        clients.append(client)
        return API(client, upstream)

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_calls_share_one_kept_alive_connection(over_http, upstream) -> None:
    api = over_http()
    token = api.login()
    for _ in range(3):
        assert api.post(SUMMARIZE, token=token)["data"]["summarize"]["text"]
    assert len(upstream.requests) == 3
    assert upstream.served is not None and upstream.served.connections == 1


@pytest.mark.parametrize(
    ("reply", "code", "retry_after"),
    [
        (
            api_error(429, "slow", None, **{"retry-after": "7"}),
            "UPSTREAM_RATE_LIMITED",
            7,
        ),
        (api_error(503, "down"), "UPSTREAM_UNAVAILABLE", None),
        (api_error(401, "bad key", "invalid_api_key"), "UPSTREAM_ERROR", None),
        (api_error(400, "too long", "context_length_exceeded"), "BAD_USER_INPUT", None),
        # Closed without an answer.
        (Reply(error=httpx2.ConnectError("dropped")), "UPSTREAM_UNAVAILABLE", None),
        (Reply(raw=b"<html>a proxy's page</html>"), "UPSTREAM_ERROR", None),
    ],
    ids=["429", "503", "401", "context", "dropped", "not json"],
)
def test_failures_map_to_the_same_codes(
    over_http, reply: Reply, code: str, retry_after: int | None
) -> None:
    api = over_http()
    api.upstream.queue(reply)
    result = api.post(SUMMARIZE, token=api.login())
    assert error_codes(result) == [code]
    assert result["errors"][0]["extensions"].get("retryAfter") == retry_after


@pytest.mark.parametrize(
    ("reply", "code", "retry_after"),
    [
        (
            api_error(429, "slow", None, **{"retry-after": "7"}),
            "UPSTREAM_RATE_LIMITED",
            7,
        ),
        (api_error(503, "down"), "UPSTREAM_UNAVAILABLE", None),
        (api_error(401, "bad key", "invalid_api_key"), "UPSTREAM_ERROR", None),
        (api_error(400, "too long", "context_length_exceeded"), "BAD_USER_INPUT", None),
        (Reply(error=httpx2.ConnectError("dropped")), "UPSTREAM_UNAVAILABLE", None),
    ],
    ids=["429", "503", "401", "context", "dropped"],
)
@pytest.mark.parametrize("http", [True, False], ids=["over http", "in memory"])
def test_a_stream_refused_maps_to_the_same_codes(
    upstream: FakeUpstream, reply: Reply, code: str, retry_after: int | None, http: bool
) -> None:
    """A stream's request answered with an error: its one event, coded as
    a completion's, whichever transport reads it (ours reads a stream's
    answer itself)."""
    app = create_app(
        make_settings(), llm_http_client=upstream.http_client(over_http=http)
    )
    with TestClient(app) as client:
        api = API(client, upstream)
        (event,) = stream_over_http(api, "sse", api.login(), reply)
    assert event["data"] is None
    assert error_codes(event) == [code]
    assert event["errors"][0]["extensions"].get("retryAfter") == retry_after


def test_a_stream_asked_of_a_moved_upstream_follows_the_redirect(over_http) -> None:
    api = over_http()
    moved = "http://moved.test/v1/chat/completions"
    *deltas, last = stream_over_http(
        api, "sse", api.login(), Reply(status=307, headers={"location": moved})
    )
    assert [d["data"]["completeStream"]["text"] for d in deltas] == [
        "Once ",
        "upon ",
        "a time",
    ]
    assert last["data"]["completeStream"]["done"] is True
    assert api.upstream.hosts == ["upstream.test", "moved.test"]


def _raw_server(
    answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> Iterator[str]:
    """A fixture's upstream that speaks raw bytes (`answer` each connection),
    on a loop of its own in a thread: its base URL while the test runs."""
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(asyncio.start_server(answer, "127.0.0.1", 0))
    port = server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}/v1"
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


@pytest.fixture
def gzipped_stream() -> Iterator[str]:
    """A server that answers any request with a stream of two deltas, its
    body gzip-encoded (Content-Encoding), as some proxies send it."""
    chunks = [
        chunk_event([{"index": 0, "delta": {"content": text}, "finish_reason": None}])
        for text in ("Once ", "upon")
    ]
    chunks.append(
        chunk_event(
            [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        )
    )
    body = gzip.compress(b"".join([*chunks, b"data: [DONE]\n\n"]))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        writer.close()

    yield from _raw_server(answer)


def test_a_gzipped_stream_is_read_decoded(gzipped_stream: str) -> None:
    # No client given: the server's default one, as it runs for real.
    app = create_app(make_settings(openai_base_url=gzipped_stream))
    with TestClient(app) as client:
        api = API(client, FakeUpstream())
        *deltas, last = stream_over_http(api, "sse", api.login())
    assert [d["data"]["completeStream"]["text"] for d in deltas] == ["Once ", "upon"]
    assert last["data"]["completeStream"]["usage"]["completionTokens"] == 2


def test_streams_read_to_their_end_share_one_kept_alive_connection(
    over_http, upstream
) -> None:
    """A stream's body read straight from aiohttp (transport.Streamed) gives
    its connection back to the pool at its end, for the next call."""
    api = over_http()
    token = api.login()
    for _ in range(3):
        *_, last = stream_over_http(api, "sse", token, Reply())
        assert last["data"]["completeStream"]["done"] is True
    assert api.post(SUMMARIZE, token=token)["data"]["summarize"]["text"]
    assert upstream.served is not None and upstream.served.connections == 1


def test_a_slow_upstream_is_a_timeout(over_http) -> None:
    api = over_http(llm_timeout_seconds=0.2)
    api.upstream.queue(Reply(delay=2, body=chat_completion("late")))
    assert error_codes(api.post(SUMMARIZE, token=api.login())) == ["UPSTREAM_TIMEOUT"]


def test_a_refused_connection_is_an_outage_so_the_fallback_answers(
    upstream: FakeUpstream,
) -> None:
    """Not a timeout (after which no fallback is tried: the deadline is spent)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    fallback = "http://fallback.test/v1"
    app = create_app(
        make_settings(openai_base_url=nobody, llm_fallback_base_url=fallback),
        llm_http_client=upstream.http_client(over_http=True),
    )
    with TestClient(app) as client:
        api = API(client, upstream)
        result = api.post(SUMMARIZE, token=api.login())
    assert result["data"]["summarize"]["text"] == "A short answer."
    assert upstream.hosts == ["fallback.test"]


@pytest.fixture
def garbled() -> Iterator[str]:
    """A server that answers anything with a line that is not HTTP."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        writer.close()

    yield from _raw_server(answer)


def test_an_answer_that_is_not_http_is_an_outage(garbled: str) -> None:
    # No client given: the server's default one, as it runs for real.
    app = create_app(make_settings(openai_base_url=garbled))
    with TestClient(app) as client:
        api = API(client, FakeUpstream())
        result = api.post(SUMMARIZE, token=api.login())
    assert error_codes(result) == ["UPSTREAM_UNAVAILABLE"]


def test_a_stream_cut_by_the_upstream_is_an_outage(over_http) -> None:
    api = over_http()
    api.upstream.queue(Reply(chunks=["Once ", "upon ", "a ", "time"], cut_after=2))
    with transport_ws(api, api.login()) as ws:
        ws.subscribe("1")
        texts = []
        while (message := ws.receive())["type"] == "next":
            payload = message["payload"]
            if payload.get("errors"):
                assert error_codes(payload) == ["UPSTREAM_UNAVAILABLE"]
                break
            texts.append(payload["data"]["completeStream"]["text"])
    assert texts == ["Once ", "upon "]


def test_a_stream_the_caller_leaves_is_closed_at_the_upstream(over_http) -> None:
    api = over_http()
    api.upstream.queue(SLOW)
    with transport_ws(api, api.login()) as ws:
        ws.subscribe("1")
        assert ws.receive()["type"] == "next"
        ws.complete("1")
        eventually(lambda: api.upstream.disconnects == 1, "upstream left open")


def test_a_request_is_on_the_wire_when_its_sender_first_waits() -> None:
    """Its body is written as it is sent, not on a later turn of the loop
    (where, under load, every other ready request's work came first): the
    upstream has all of it by the time the sending task waits for the
    answer. On a kept-alive connection, as calls under load are."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1/chat/completions"
    body = b'{"messages": []}'

    async def turns_until(ready: Callable[[], Any]) -> Any:
        for _ in range(10_000):
            if found := ready():
                return found
            await asyncio.sleep(0)
        raise AssertionError("never ready")

    def received(peer: socket.socket) -> bytes:
        try:
            return peer.recv(65536, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return b""

    async def scenario() -> bytes:
        transport = AiohttpTransport()
        try:
            first = asyncio.ensure_future(
                transport.handle_async_request(
                    httpx2.Request("POST", url, content=body)
                )
            )
            peer, _ = await turns_until(lambda: _accepted(listener))
            await turns_until(lambda: received(peer).endswith(body))
            peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            await (await first).aread()  # read to its end: the connection is kept

            second = asyncio.ensure_future(
                transport.handle_async_request(
                    httpx2.Request("POST", url, content=body)
                )
            )
            await asyncio.sleep(0)  # its first step: sent, and waiting
            assert not second.done()
            on_the_wire = received(peer)
            second.cancel()
            peer.close()
            return on_the_wire
        finally:
            await transport.aclose()
            listener.close()

    on_the_wire = asyncio.run(scenario())
    assert on_the_wire.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert on_the_wire.endswith(b"\r\n\r\n" + body)


def _accepted(listener: socket.socket) -> tuple[socket.socket, Any] | None:
    try:
        return listener.accept()
    except BlockingIOError:
        return None


def test_a_large_body_is_sent_whole_or_cancelled_cleanly() -> None:
    """A body larger than the writer's buffer: its first part is written as
    the request is sent, the rest by the writer's task as the upstream reads
    it. Cancelled while the upstream reads nothing, the request leaves no
    writer task running and no error unretrieved."""
    body = b"x" * (32 * 1024 * 1024)  # more than loopback buffers hold
    received: list[bytes] = []
    read_nothing = asyncio.Event()
    stuck: asyncio.Future[Any] | None = None

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        while await reader.readuntil(b"\r\n\r\n"):
            if read_nothing.is_set():
                return  # the connection open, its bytes unread
            await asyncio.sleep(0.05)  # the client's buffer fills meanwhile
            received.append(await reader.readexactly(len(body)))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")

    def writing() -> bool:
        """A task other than ours, the upstream's or the request's is running:
        the body's writer."""
        ours = {asyncio.current_task(), stuck}
        return any(
            task not in ours and answer.__name__ not in repr(task)
            for task in asyncio.all_tasks()
        )

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        unhandled: list[Any] = []
        loop.set_exception_handler(lambda _, context: unhandled.append(context))
        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat"
        transport = AiohttpTransport()
        try:
            sent = await transport.handle_async_request(
                httpx2.Request("POST", url, content=body)
            )
            assert (await sent.aread()) == b"{}"
            assert received == [body]

            read_nothing.set()
            nonlocal stuck
            stuck = asyncio.ensure_future(
                transport.handle_async_request(
                    httpx2.Request("POST", url, content=body)
                )
            )
            await asyncio.sleep(0.1)
            assert writing(), "the body fitted the socket's buffers"
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            for _ in range(10):
                await asyncio.sleep(0)
            assert not writing()
            return unhandled
        finally:
            await transport.aclose()
            server.close()

    assert asyncio.run(scenario()) == []
