"""A 200 from an upstream is not yet an answer: what makes it one.

A body that is not JSON (a proxy's HTML page, even one labelled
`application/json`), a completion without choices or usage, or an empty
answer is a fault of the upstream. Each raises MalformedAnswer, an upstream
error (upstream_errors.py), so retries, the circuit breaker and the error
mapping treat it as they treat a 5xx: the caller sees UPSTREAM_ERROR, never
a crash of ours.

A completion is read as the JSON the upstream sent (a dict), not as the
openai SDK's typed `ChatCompletion`: building that for every answer was a
sixth of a call's CPU, for the four fields we read.
"""

from __future__ import annotations

import json
from typing import Any

from gptmini_graphql.llm.upstream_errors import APIError

# A chat.completion as the upstream sent it, checked by `checked`.
Completion = dict[str, Any]


class MalformedAnswer(APIError):
    """`transient`: a garbled body, worth a retry; an empty or incomplete
    answer is what the same request would get again, so it is not retried
    (but counts against the upstream all the same)."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def checked(body: object) -> Completion:
    """`body` (the parsed JSON) if it is a usable answer, else MalformedAnswer."""
    if isinstance(body, str):
        # Not labelled JSON: read as text (which may be JSON): chat_client.py.
        try:
            body = json.loads(body)
        except ValueError:
            body = None
    if not isinstance(body, dict):
        raise MalformedAnswer(
            "The model server sent a malformed answer.", transient=True
        )
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise MalformedAnswer(
            "The model server sent an answer without choices.", transient=False
        ) from exc
    if token_counts(body.get("usage")) is None:
        raise MalformedAnswer(
            "The model server sent an answer without usage.", transient=False
        )
    if not isinstance(content, str) or not content.strip():
        raise MalformedAnswer("The model returned an empty answer.", transient=False)
    return body


def token_counts(usage: object) -> tuple[int, int, int] | None:
    """(prompt, completion, cached) tokens of a `usage` object; None if it
    is missing or not numbers."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    counts = (
        _count(usage.get("prompt_tokens")),
        _count(usage.get("completion_tokens")),
        0 if cached is None else _count(cached),
    )
    return None if None in counts else counts  # type: ignore[return-value]


def _count(value: object) -> int | None:
    """A token count as pydantic read one: an int, or a float or a string
    that holds one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    try:
        number = float(value) if isinstance(value, float | str) else None
    except ValueError:
        return None
    if number is None or not number.is_integer():
        return None
    return int(number)
