"""The HTTP protocol `serve` runs (http_protocol.py), over a real socket: a
response's head goes out with its body, yet nothing waits for a body that
does not come in the same turn of the loop (a stream's head, `100 Continue`)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from gptmini_graphql.http_protocol import OneWriteHTTPProtocol

# Set by the test once it has read a stream's head: the stream's one chunk
# is sent only then, so a head held for its body would never arrive.
released = threading.Event()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:  # the whole request body (after a 100 Continue, if asked)
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.to_thread(released.wait, 10)
        await send({"type": "http.response.body", "body": b"event-1"})
        return
    answer = b"echo:" + body
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(answer)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
def port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http=OneWriteHTTPProtocol, log_config=None, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    try:
        for _ in range(500):
            if server.started:
                break
            threading.Event().wait(0.01)
        yield sock.getsockname()[1]
    finally:
        released.set()
        server.should_exit = True
        thread.join(10)
        sock.close()


def _connect(port: int) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    return client


def _read_until(client: socket.socket, end: bytes) -> bytes:
    data = b""
    while end not in data:
        chunk = client.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data


def _post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: test", f"Content-Length: {len(body)}"]
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode() + body


def test_responses_on_one_connection_arrive_whole(port: int) -> None:
    with _connect(port) as client:
        for text in (b"first", b"second"):
            client.sendall(_post("/", text))
            answer = _read_until(client, b"echo:" + text)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert answer.endswith(b"\r\n\r\necho:" + text)


def test_a_closing_response_arrives_before_the_close(port: int) -> None:
    with _connect(port) as client:
        client.sendall(_post("/", b"bye", "Connection: close"))
        data = b""
        while chunk := client.recv(65536):
            data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n")
        assert data.endswith(b"echo:bye")


def test_a_streams_head_does_not_wait_for_its_first_chunk(port: int) -> None:
    released.clear()
    with _connect(port) as client:
        client.sendall(_post("/stream", b""))
        head = _read_until(client, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"event-1" not in head
        released.set()
        assert b"event-1" in _read_until(client, b"0\r\n\r\n")


def test_100_continue_goes_out_before_the_body_is_sent(port: int) -> None:
    with _connect(port) as client:
        request = _post("/", b"late", "Expect: 100-continue")
        head, body = request.split(b"\r\n\r\n")
        client.sendall(head + b"\r\n\r\n")
        assert _read_until(client, b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.sendall(body)
        assert _read_until(client, b"echo:late").endswith(b"echo:late")


def test_pipelined_requests_are_answered_whole_and_in_order(port: int) -> None:
    """A HEAD's response is a head alone (held until the turn's end): it
    still goes out before the next pipelined request's answer."""
    head = b"HEAD / HTTP/1.1\r\nHost: test\r\n\r\n"
    with _connect(port) as client:
        client.sendall(
            head + _post("/", b"a") + head + _post("/", b"b", "Connection: close")
        )
        data = b""
        while chunk := client.recv(65536):
            data += chunk
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert [answer.split(b"\r\n")[0] for answer in answers] == [b"200 OK"] * 4
    assert [answer.split(b"\r\n\r\n", 1)[1] for answer in answers] == [
        b"",
        b"echo:a",
        b"",
        b"echo:b",
    ]
