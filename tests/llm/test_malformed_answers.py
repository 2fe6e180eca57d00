"""A 200 that is not an answer: bodies that are not JSON, completions without
their parts, empty answers. Each is an upstream fault (UPSTREAM_ERROR), counted
by the circuit breaker, with no traceback in the log."""

from __future__ import annotations

import pytest

from tests.conftest import error_codes
from tests.fake_upstream import Reply, chat_completion, chunk_event
from tests.test_subscriptions import stream_over_http

SUMMARIZE = '{ summarize(text: "hello") { text } }'
HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"

GARBLED = {
    "html": Reply(raw=HTML, headers={"content-type": "text/html"}),
    "html labelled json": Reply(raw=HTML, headers={"content-type": "application/json"}),
    "truncated json": Reply(
        raw=b'{"id": "chatcmpl-1", "choices": [{"mess',
        headers={"content-type": "application/json"},
    ),
    "not a completion": Reply(body={"status": "ok"}),
    "no choices": Reply(body={**chat_completion("x"), "choices": []}),
}

EMPTY = {
    "null": None,
    "empty": "",
    "blank": "  \n ",
}

TASKS = {
    "summarize": '{ summarize(text: "hello") { text } }',
    "translate": '{ translate(text: "hello", targetLanguage: "fr", sourceLanguage: "en") { text } }',
    "complete": '{ complete(prompt: "hello") { text } }',
    "analyze": '{ analyze(text: "hello") { sentiment } }',
}


def _no_error_lines(log: str) -> None:
    assert "Traceback" not in log
    assert '"level": "ERROR"' not in log


@pytest.mark.parametrize("reply", GARBLED.values(), ids=GARBLED.keys())
def test_a_garbled_body_is_an_upstream_error(capfd, make_api, reply: Reply) -> None:
    api = make_api()
    token = api.login()
    capfd.readouterr()
    api.upstream.queue(reply)
    assert error_codes(api.post(SUMMARIZE, token=token)) == ["UPSTREAM_ERROR"]
    _no_error_lines(capfd.readouterr().err)


def test_a_garbled_body_is_retried(make_api) -> None:
    api = make_api(llm_max_retries=1)
    token = api.login()
    api.upstream.queue(GARBLED["html labelled json"])
    assert api.post(SUMMARIZE, token=token)["data"]["summarize"]["text"]
    assert len(api.upstream.requests) == 2


@pytest.mark.parametrize(
    "reply",
    [GARBLED["html"], Reply(body=chat_completion(None))],  # type: ignore[arg-type]
    ids=["html", "null content"],
)
def test_malformed_answers_open_the_circuit(make_api, reply: Reply) -> None:
    api = make_api(llm_max_retries=0, circuit_breaker_failures=2)
    token = api.login()
    api.upstream.default = lambda body: reply
    for _ in range(2):
        assert error_codes(api.post(SUMMARIZE, token=token)) == ["UPSTREAM_ERROR"]
    # Open: refused without asking the upstream again.
    assert error_codes(api.post(SUMMARIZE, token=token)) == ["UPSTREAM_UNAVAILABLE"]
    assert len(api.upstream.requests) == 2


@pytest.mark.parametrize("content", EMPTY.values(), ids=EMPTY.keys())
@pytest.mark.parametrize("task", TASKS)
def test_an_empty_answer_is_an_upstream_error_for_every_task(
    capfd, make_api, task: str, content: str | None
) -> None:
    api = make_api(llm_max_retries=2)
    token = api.login()
    capfd.readouterr()
    api.upstream.default = lambda body: Reply(body=chat_completion(content))  # type: ignore[arg-type]
    result = api.post(TASKS[task], token=token)
    assert result["data"] is None
    assert error_codes(result) == ["UPSTREAM_ERROR"]
    # The same request would get the same empty answer: not retried.
    assert len(api.upstream.requests) == 1
    _no_error_lines(capfd.readouterr().err)


def test_a_stream_that_is_not_json_is_an_upstream_error(capfd, api, token) -> None:
    reply = Reply(raw_events=[b"data: <html>oops</html>\n\n", b"data: [DONE]\n\n"])
    *_, last = stream_over_http(api, "sse", token, reply)
    assert error_codes(last) == ["UPSTREAM_ERROR"]
    _no_error_lines(capfd.readouterr().err)


def test_a_stream_with_no_text_is_an_upstream_error(api, token) -> None:
    finish = chunk_event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
    reply = Reply(raw_events=[finish, b"data: [DONE]\n\n"])
    *_, last = stream_over_http(api, "sse", token, reply)
    assert error_codes(last) == ["UPSTREAM_ERROR"]
