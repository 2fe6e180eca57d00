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


def test_a_lines_time_is_its_records_to_the_millisecond(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """UTC, ISO 8601, milliseconds: as `datetime.isoformat` writes the
    record's time (rounded to microseconds as `fromtimestamp` rounds), across
    second, day and year boundaries and before 1970."""
    from datetime import UTC, datetime

    configure_logging("INFO")
    moments = [
        1_700_000_000.0,
        1_700_000_000.0004995,
        1_700_000_000.0005,
        1_700_000_000.9999995,  # rounds up into the next second
        1_700_000_001.25,
        1_767_225_599.9995,  # the last millisecond of 2025
        1_767_225_600.001,
        -1.5,
    ]
    for moment in moments:
        monkeypatch.setattr(logging.time, "time", lambda moment=moment: moment)
        logging.getLogger("gptmini_graphql.test").info("tick")
    times = [line["time"] for line in _lines(capfd.readouterr().err)]
    assert times == [
        datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")
        for moment in moments
    ]
