"""Every error a client can see, each with the GraphQL `extensions.code` it carries.

    AppError                      (base; never raised itself)
    ├── Unauthenticated           UNAUTHENTICATED
    ├── BadUserInput              BAD_USER_INPUT
    ├── RateLimited               RATE_LIMITED          + retryAfter
    └── UpstreamError             UPSTREAM_ERROR
        ├── UpstreamTimeout       UPSTREAM_TIMEOUT
        ├── UpstreamUnavailable   UPSTREAM_UNAVAILABLE
        └── UpstreamRateLimited   UPSTREAM_RATE_LIMITED + retryAfter (when known)

Anything else that escapes a resolver is shown as INTERNAL_SERVER_ERROR with a
fixed message; its details go to the log only. GraphQL's own parse and
validation failures are GRAPHQL_PARSE_FAILED and GRAPHQL_VALIDATION_FAILED.
"""

from __future__ import annotations

import math
from typing import Any

INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
INTERNAL_MESSAGE = "Internal server error"
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"


class AppError(Exception):
    code = INTERNAL_SERVER_ERROR

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after

    @property
    def extensions(self) -> dict[str, Any]:
        extensions: dict[str, Any] = {"code": self.code}
        if self.retry_after is not None:
            # Whole seconds, never 0: a client told "retry after 0" retries at once.
            extensions["retryAfter"] = max(1, math.ceil(self.retry_after))
        return extensions


class Unauthenticated(AppError):
    code = "UNAUTHENTICATED"


class BadUserInput(AppError):
    code = "BAD_USER_INPUT"


class RateLimited(AppError):
    code = "RATE_LIMITED"


class UpstreamError(AppError):
    code = "UPSTREAM_ERROR"


class UpstreamTimeout(UpstreamError):
    code = "UPSTREAM_TIMEOUT"


class UpstreamUnavailable(UpstreamError):
    code = "UPSTREAM_UNAVAILABLE"


class UpstreamRateLimited(UpstreamError):
    code = "UPSTREAM_RATE_LIMITED"
