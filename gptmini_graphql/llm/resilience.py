"""Which upstream errors are worth a retry, and how long to wait first."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx2
import openai

from gptmini_graphql.llm.malformed import MalformedAnswer

# Longest backoff between two attempts when the upstream names no wait.
MAX_BACKOFF_SECONDS = 8.0
# The longest wait an upstream may ask of us (and of our callers).
MAX_RETRY_AFTER_SECONDS = 3600.0
BASE_BACKOFF_SECONDS = 0.5


def is_outage(exc: Exception) -> bool:
    """The upstream is down or failing (not: it refused this request)."""
    if isinstance(exc, TimeoutError | openai.APIConnectionError):  # timeouts too
        return True
    if isinstance(exc, MalformedAnswer):  # a 200 that is no answer
        return True
    status = getattr(exc, "status_code", None)
    return status is not None and status >= 500


def is_retryable(exc: Exception) -> bool:
    """Timeouts, 408, 409, 429, 5xx and garbled bodies, but never an exhausted
    quota or an empty answer."""
    if isinstance(exc, MalformedAnswer):
        return exc.transient
    if is_outage(exc):
        return True
    if isinstance(exc, openai.RateLimitError):
        return exc.code != "insufficient_quota"
    return getattr(exc, "status_code", None) in (408, 409)


def retry_delay(exc: Exception, attempt: int) -> float:
    """The upstream's Retry-After when it gave one, else exponential backoff
    with full jitter (so retrying replicas don't arrive in step)."""
    response = getattr(exc, "response", None)
    if response is not None and (told := retry_after_seconds(response.headers)):
        return told
    ceiling = min(MAX_BACKOFF_SECONDS, BASE_BACKOFF_SECONDS * 2**attempt)
    return random.uniform(0, ceiling)  # noqa: S311 - jitter, not a secret


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
