"""What every task shares: argument checks, the user-message envelope, and
running two model calls at once."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import TypeVar

from gptmini_graphql.errors import BadUserInput, first_failure

A = TypeVar("A")
B = TypeVar("B")

_TAGS = re.compile(r"</?text>")
# Any spelling a model might read as the end of the envelope.
_CLOSING_TAG = re.compile(r"<\s*/\s*text\s*>", re.IGNORECASE)


def require_text(value: str, argument: str, max_chars: int) -> str:
    """Non-blank text within the configured size; checked before any upstream call."""
    if not value.strip():
        raise BadUserInput(f"{argument} must not be empty.")
    if len(value) > max_chars:
        raise BadUserInput(
            f"{argument} is {len(value)} characters long; the limit is {max_chars}."
        )
    return value


def require_range(value: float, argument: str, low: float, high: float) -> float:
    if not low <= value <= high:
        raise BadUserInput(f"{argument} must be between {low:g} and {high:g}.")
    return value


def delimited(text: str) -> str:
    """User text in the user message only, between tags a model can't mistake.

    A closing tag inside the text is defused so the text cannot end the
    envelope early and pose as instructions.
    """
    return "<text>\n" + _CLOSING_TAG.sub("<\\/text>", text) + "\n</text>"


def without_envelope(answer: str) -> str:
    """Small models echo the <text> tags back; the caller never wants them."""
    return _TAGS.sub("", answer).strip()


async def both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Await two calls at once. If one fails, the other is cancelled (not left
    running) and that failure is raised as itself: a TaskGroup's
    ExceptionGroup would reach the client as an internal error."""
    try:
        async with asyncio.TaskGroup() as calls:
            a = calls.create_task(_awaited(first))
            b = calls.create_task(_awaited(second))
    except BaseExceptionGroup as group:
        raise first_failure(group) from None
    return a.result(), b.result()


async def _awaited(call: Awaitable[A]) -> A:
    return await call
