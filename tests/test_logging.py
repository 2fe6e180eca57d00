"""The JSON log lines on stderr: whole, one per line; a request's out by the
end of the event loop's turn that logged them, any other at once."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from gptmini_graphql.logging import configure_logging, request_id_var


def _lines(captured: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in captured.splitlines() if line.strip()]


def test_a_line_logged_without_a_loop_goes_out_at_once(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")
    logging.getLogger("gptmini_graphql.test").info("alone", extra={"n": 1})
    (line,) = _lines(capfd.readouterr().err)
    assert line["message"] == "alone"
    assert line["n"] == 1


def test_lines_of_one_turn_go_out_whole_by_its_end(
    capfd: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO")
    logger = logging.getLogger("gptmini_graphql.test")

    async def log_and_wait() -> list[dict[str, object]]:
        request_id_var.set("r1")
        for number in range(50):
            logger.info("in the loop", extra={"n": number, "text": "x" * 500})
        await asyncio.sleep(0)  # the turn ends
        return _lines(capfd.readouterr().err)

    lines = asyncio.run(log_and_wait())
    assert [line["n"] for line in lines] == list(range(50))
    assert all(line["text"] == "x" * 500 for line in lines)


def test_a_line_of_no_request_goes_out_within_its_turn(
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The server's own lines (uvicorn's last ones, before it ends the
    process by raising the signal that stopped it) wait for nothing."""
    configure_logging("INFO")
    logger = logging.getLogger("gptmini_graphql.test")

    async def log_in_a_request_then_not() -> list[dict[str, object]]:
        request_id_var.set("r1")
        logger.info("a request's")
        request_id_var.set(None)
        logger.info("the server's")
        return _lines(capfd.readouterr().err)  # the same turn

    lines = asyncio.run(log_in_a_request_then_not())
    assert [line["message"] for line in lines] == ["a request's", "the server's"]
