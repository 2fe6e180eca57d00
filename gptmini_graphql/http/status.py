"""The HTTP status of a GraphQL result.

* A GraphQL result is 200 with `application/json`, whatever its errors.
* With `application/graphql-response+json`, a request error (the document
  does not parse or validate, variables do not coerce, the operation is
  refused before it runs) has no `data` entry and a 4xx or 5xx status
  (REQUEST_ERROR_STATUS; 400 unless listed); results of execution are 200.
"""

from __future__ import annotations

from collections.abc import Sequence

from strawberry.types import ExecutionResult

from gptmini_graphql.errors import (
    INTERNAL_SERVER_ERROR,
    PERSISTED_QUERY_NOT_ALLOWED,
    PERSISTED_QUERY_NOT_FOUND,
    RateLimited,
)

# With application/graphql-response+json, the status of a request error by
# its (first) code; any other code is 400.
REQUEST_ERROR_STATUS: dict[str, int] = {
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    PERSISTED_QUERY_NOT_ALLOWED: 403,
    PERSISTED_QUERY_NOT_FOUND: 404,
    RateLimited.code: 429,
    INTERNAL_SERVER_ERROR: 500,
    "UPSTREAM_ERROR": 502,
    "UPSTREAM_UNAVAILABLE": 503,
    "UPSTREAM_RATE_LIMITED": 503,
    "UPSTREAM_TIMEOUT": 504,
}
# A persisted query miss must not be cached on the way (Apollo does the same).
NO_CACHE = {"Cache-Control": "private, no-cache, must-revalidate"}


def is_request_error(result: ExecutionResult) -> bool:
    """Raised before execution: no data, and no error belongs to a field."""
    return (
        result.data is None
        and bool(result.errors)
        and all(error.path is None for error in result.errors or ())
    )


def request_error_status(errors: Sequence[object]) -> tuple[int, dict[str, str]]:
    """The status (and headers) of a request error with these (formatted)
    errors, under application/graphql-response+json."""
    extensions = extensions_of(errors[0]) if errors else {}
    code = extensions.get("code")
    status = REQUEST_ERROR_STATUS.get(code, 400) if isinstance(code, str) else 400
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    retry_after = extensions.get("retryAfter")
    if status in (429, 503) and isinstance(retry_after, int):
        headers["Retry-After"] = str(retry_after)
    if status == 404:
        headers.update(NO_CACHE)
    return status, headers


def extensions_of(error: object) -> dict[str, object]:
    """A formatted error's `extensions` ({} when it has none)."""
    extensions = error.get("extensions") if isinstance(error, dict) else None
    return extensions if isinstance(extensions, dict) else {}


def code_of(error: object) -> str:
    """A formatted error's code; one without is a bug of ours."""
    code = extensions_of(error).get("code")
    return code if isinstance(code, str) else INTERNAL_SERVER_ERROR
