"""A 200 from an upstream is not yet an answer: what makes it one.

A body that is not JSON (a proxy's HTML page, even one labelled
`application/json`), a completion without choices or usage, or an empty
answer is a fault of the upstream. Each raises MalformedAnswer, an SDK error,
so retries, the circuit breaker and the error mapping treat it as they treat
a 5xx: the caller sees UPSTREAM_ERROR, never a crash of ours.
"""

from __future__ import annotations

import httpx2
import openai
from openai.types.chat import ChatCompletion


class MalformedAnswer(openai.APIError):
    """`transient`: a garbled body, worth a retry; an empty or incomplete
    answer is what the same request would get again, so it is not retried
    (but counts against the upstream all the same)."""

    def __init__(self, message: str, url: httpx2.URL, *, transient: bool) -> None:
        super().__init__(message, httpx2.Request("POST", url), body=None)
        self.transient = transient


def checked(completion: object, url: httpx2.URL) -> ChatCompletion:
    """`completion` if it is a usable answer, else MalformedAnswer."""
    if not isinstance(completion, ChatCompletion):
        # The SDK hands back the body as text when it is not JSON.
        raise MalformedAnswer(
            "The model server sent a malformed answer.", url, transient=True
        )
    try:
        choices = completion.choices
        content = choices[0].message.content
        usage_ok = completion.usage is not None
    except (AttributeError, IndexError, TypeError) as exc:
        raise MalformedAnswer(
            "The model server sent an answer without choices.", url, transient=False
        ) from exc
    if not usage_ok:
        raise MalformedAnswer(
            "The model server sent an answer without usage.", url, transient=False
        )
    if not isinstance(content, str) or not content.strip():
        raise MalformedAnswer(
            "The model returned an empty answer.", url, transient=False
        )
    return completion
