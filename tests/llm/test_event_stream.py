"""A stream's body framed any way the event-stream format allows reads the
same (llm/sse.py reads it, not the SDK): line endings, events split across
reads, comments, data over several lines, whatever follows `[DONE]`."""

from __future__ import annotations

import json

import pytest

from tests.conftest import error_codes
from tests.fake_upstream import Reply
from tests.test_subscriptions import stream_over_http


def _chunk(delta: dict, finish_reason: str | None = None, **more: object) -> dict:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return {"id": "c", "model": "gpt-4o-mini-2024-07-18", "choices": [choice], **more}


CHUNKS = [
    _chunk({"role": "assistant", "content": "Once "}),
    _chunk({"content": "upon"}),
    _chunk({}, "stop"),
    {
        "id": "c",
        "choices": [],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
    },
]


def _framed(end: bytes) -> bytes:
    events = [f"data: {json.dumps(chunk)}".encode() for chunk in CHUNKS]
    return b"".join(event + end + end for event in events) + b"data: [DONE]" + end + end


@pytest.mark.parametrize(
    "pieces",
    [
        [_framed(b"\n")],
        [_framed(b"\r\n")],
        [_framed(b"\r")],
        # One byte at a time: lines, and CRLFs, split across reads.
        [bytes([byte]) for byte in _framed(b"\r\n")],
        # Comments (keep-alives), data over two lines, a colon without a space,
        # and bytes after [DONE] that are never read as events.
        [
            b": keep-alive\n\n",
            f"data: {json.dumps(CHUNKS[0])[:20]}\ndata: {json.dumps(CHUNKS[0])[20:]}\n\n".encode(),
            f"data:{json.dumps(CHUNKS[1])}\n\n".encode(),
            b": ping\n",
            f"data: {json.dumps(CHUNKS[2])}\n\n".encode(),
            f"data: {json.dumps(CHUNKS[3])}\n\n".encode(),
            b"data: [DONE]\n\ndata: not json\n\n",
        ],
        # JSON with whitespace around it: a second space after the colon, a tab
        # and a space at the end of the line.
        [f"data:  {json.dumps(chunk)}\t \n\n".encode() for chunk in CHUNKS]
        + [b"data: [DONE]\n\n"],
    ],
    ids=[
        "LF",
        "CRLF",
        "CR",
        "byte by byte",
        "comments and split data",
        "whitespace around the JSON",
    ],
)
def test_every_framing_reads_the_same(api, token, pieces: list[bytes]) -> None:
    *deltas, last = stream_over_http(api, "sse", token, Reply(raw_events=pieces))
    assert [d["data"]["completeStream"]["text"] for d in deltas] == ["Once ", "upon"]
    end = last["data"]["completeStream"]
    assert end["done"] and end["finishReason"] == "STOP"
    assert end["usage"]["completionTokens"] == 2


def test_an_error_event_says_the_upstreams_message(api, token) -> None:
    error = {"error": {"message": "The server had an error", "type": "server_error"}}
    pieces = [
        f"data: {json.dumps(CHUNKS[0])}\n\n".encode(),
        b"data: %s\n\n" % json.dumps(error).encode(),
    ]
    *_, last = stream_over_http(api, "sse", token, Reply(raw_events=pieces))
    assert error_codes(last) == ["UPSTREAM_UNAVAILABLE"]
