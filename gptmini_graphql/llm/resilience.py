"""Which upstream errors are worth a retry, and how long to wait first.

Ours, because an HTTP client's retries (the openai SDK's were, before
chat_client.py) cannot say them: an exhausted quota (a 429 like any other)
and a 500 that blames the request are not retried, a garbled 200 is, and no wait may
outlast the request's deadline (llm/upstream.py). The loop and the backoff
are tenacity's.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx2
from tenacity import RetryCallState, wait_random_exponential

from gptmini_graphql.llm.malformed import MalformedAnswer
from gptmini_graphql.llm.upstream_errors import (
    APIConnectionError,
    APIError,
    APIStatusError,
    StreamErrorEvent,
)

# The longest wait an upstream may ask of us (and of our callers).
MAX_RETRY_AFTER_SECONDS = 3600.0
# When the upstream names no wait: exponential from 0.5 s up to 8 s, with
# full jitter (so retrying replicas don't arrive in step).
_BACKOFF = wait_random_exponential(multiplier=0.5, max=8.0)


def is_outage(exc: Exception) -> bool:
    """The upstream is down or failing (not: it refused this request).

    Connection errors, timeouts, 502/503/504, an error event in a stream, and
    a 500 that does not name the request as its cause: some servers (llama-cpp-python's among them)
    answer 500 to a parameter they do not support, and that is a refusal.
    """
    if isinstance(exc, TimeoutError | APIConnectionError):  # timeouts too
        return True
    if isinstance(exc, MalformedAnswer):  # a 200 that is no answer
        return True
    if isinstance(exc, StreamErrorEvent):
        # An error event in a stream that had begun (it has no status): the
        # server failed its answer, unless it blames the request.
        return not about_the_request(exc)
    status: int | None = getattr(exc, "status_code", None)
    if status in (502, 503, 504):
        return True
    return status is not None and status >= 500 and not about_the_request(exc)


def is_refusal(exc: Exception) -> bool:
    """The upstream answered, and refused this request's shape or parameters:
    retrying it unchanged would be refused again, and says nothing of its health."""
    status: int | None = getattr(exc, "status_code", None)
    if status is None or is_outage(exc) or status in NOT_REFUSALS:
        return False
    return status >= 400


# Statuses that say something other than "this request is wrong".
NOT_REFUSALS = frozenset({401, 403, 408, 409, 429})

# How servers say "your request is wrong" when their status code does not:
# pydantic's and FastAPI's wording, and OpenAI's own.
_ABOUT_THE_REQUEST = re.compile(
    r"validation error|input should be|field required|extra inputs are not"
    r"|not supported|unsupported|unrecognized|unknown (?:parameter|argument|field)"
    r"|invalid (?:parameter|argument|value|request)|response_format|json_schema"
    r"|context length|context window",
    re.IGNORECASE,
)


def about_the_request(exc: Exception) -> bool:
    """The error body blames the request: a parameter, a type, a validation."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        if body.get("param") or body.get("type") == "invalid_request_error":
            return True
        if body.get("code") == "context_length_exceeded":
            return True
    status: int | None = getattr(exc, "status_code", None)
    if status == 501:  # Not Implemented: a capability, not a failure
        return True
    return bool(_ABOUT_THE_REQUEST.search(str(getattr(exc, "message", "") or "")))


def is_retryable(exc: BaseException) -> bool:
    """Outages, 408, 409, 429 and garbled bodies, but never an exhausted
    quota or an empty answer."""
    if not isinstance(exc, APIError):
        return False  # cancelled, or a bug
    if isinstance(exc, MalformedAnswer):
        return exc.transient
    if is_outage(exc):
        return True
    if not isinstance(exc, APIStatusError):
        return False
    if exc.status_code == 429:
        return exc.code != "insufficient_quota"
    return exc.status_code in (408, 409)


def retry_wait(attempt: RetryCallState) -> float:
    """The upstream's Retry-After when it gave one, else the backoff."""
    error = attempt.outcome.exception() if attempt.outcome else None
    if isinstance(error, APIStatusError) and (
        told := retry_after_seconds(error.headers)
    ):
        return told
    return _BACKOFF(attempt)


def retry_after_seconds(headers: httpx2.Headers) -> float | None:
    """`retry-after-ms`, or `retry-after` in seconds or as an HTTP date;
    capped, and None for nonsense (`inf`, `nan`, negative, unparseable)."""
    seconds = None
    if (millis := headers.get("retry-after-ms")) is not None:
        seconds = _number(millis, 1000)
    if seconds is None and (value := headers.get("retry-after")) is not None:
        seconds = _number(value, 1)
        if seconds is None:
            try:
                moment = parsedate_to_datetime(value)
                seconds = (moment - datetime.now(UTC)).total_seconds()
            except (TypeError, ValueError):
                return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER_SECONDS)


def _number(text: str, per_second: int) -> float | None:
    try:
        return float(text) / per_second
    except ValueError:
        return None
