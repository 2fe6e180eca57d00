"""Every error a client can see, each with the GraphQL `extensions.code` it carries.

    AppError                      (base; never raised itself)
    ├── Unauthenticated           UNAUTHENTICATED
    ├── Forbidden                 FORBIDDEN
    ├── BadUserInput              BAD_USER_INPUT
    ├── RateLimited               RATE_LIMITED          + retryAfter
    │   └── TokenRateLimited      RATE_LIMITED          + retryAfter, budget, limit, remaining, requested, resetsAt
    ├── BudgetExceeded            BUDGET_EXCEEDED       + budget, limit, remaining, requested, resetsAt
    ├── BudgetUnavailable         BUDGET_UNAVAILABLE    + retryAfter (budgets cannot be checked)
    ├── ServerShuttingDown        SERVER_SHUTTING_DOWN  (a stream or request cut by shutdown)
    ├── DatabaseUnavailable       DATABASE_UNAVAILABLE  + retryAfter
    └── UpstreamError             UPSTREAM_ERROR
        ├── UpstreamTimeout       UPSTREAM_TIMEOUT
        ├── UpstreamUnavailable   UPSTREAM_UNAVAILABLE
        └── UpstreamRateLimited   UPSTREAM_RATE_LIMITED + retryAfter (when known)

Anything else that escapes a resolver is shown as INTERNAL_SERVER_ERROR with a
fixed message; its details go to the log only.

The codes of refusals before an operation runs are below too (raised by the
endpoint, the middleware, validation and persisted queries), so that this
module lists every code a client can see.
"""

from __future__ import annotations

import math
from typing import Any

INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
INTERNAL_MESSAGE = "Internal server error"

# Not a GraphQL request we can run (HTTP level).
BAD_REQUEST = "BAD_REQUEST"
METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
NOT_ACCEPTABLE = "NOT_ACCEPTABLE"
NOT_FOUND = "NOT_FOUND"
UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
CSRF_REFUSED = "CSRF_REFUSED"
# The document: GraphQL's own checks, then ours.
GRAPHQL_PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
OPERATION_RESOLUTION_FAILURE = "OPERATION_RESOLUTION_FAILURE"
QUERY_TOO_DEEP = "QUERY_TOO_DEEP"
TOO_MANY_ALIASES = "TOO_MANY_ALIASES"
QUERY_TOO_LARGE = "QUERY_TOO_LARGE"
TOO_MANY_LLM_FIELDS = "TOO_MANY_LLM_FIELDS"
# Persisted queries.
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
PERSISTED_QUERY_NOT_SUPPORTED = "PERSISTED_QUERY_NOT_SUPPORTED"
PERSISTED_QUERY_NOT_ALLOWED = "PERSISTED_QUERY_NOT_ALLOWED"
PERSISTED_QUERY_HASH_MISMATCH = "PERSISTED_QUERY_HASH_MISMATCH"


def error_body(message: str, code: str) -> dict[str, Any]:
    """A GraphQL-shaped body for a refusal that never reached execution."""
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


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


class Forbidden(AppError):
    code = "FORBIDDEN"


class BadUserInput(AppError):
    code = "BAD_USER_INPUT"


class RateLimited(AppError):
    code = "RATE_LIMITED"


class _OverBudget(AppError):
    """A call whose worst case does not fit what is left of a budget."""

    def __init__(
        self,
        message: str,
        *,
        budget: str,
        limit: float,
        remaining: float,
        requested: float,
        resets_at: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.details = {
            "budget": budget,  # user.usd_per_day, key.tokens_per_month, ...
            "limit": limit,
            "remaining": remaining,
            "requested": requested,
            "resetsAt": resets_at,
        }

    @property
    def extensions(self) -> dict[str, Any]:
        return {**super().extensions, **self.details}


class BudgetExceeded(_OverBudget):
    code = "BUDGET_EXCEEDED"


class TokenRateLimited(_OverBudget, RateLimited):
    """TOKEN_RATE_LIMIT: tokens per minute, a rate limit kept like a budget."""

    code = "RATE_LIMITED"


class BudgetUnavailable(AppError):
    """Budgets cannot be checked (their Redis is unreachable): refused rather
    than let spend past a budget unseen."""

    code = "BUDGET_UNAVAILABLE"


class ServerShuttingDown(AppError):
    code = "SERVER_SHUTTING_DOWN"


class DatabaseUnavailable(AppError):
    """The database of users and keys cannot be reached (callers it knows
    already keep working from its cache)."""

    code = "DATABASE_UNAVAILABLE"


class UpstreamError(AppError):
    code = "UPSTREAM_ERROR"


class UpstreamTimeout(UpstreamError):
    code = "UPSTREAM_TIMEOUT"


class UpstreamUnavailable(UpstreamError):
    code = "UPSTREAM_UNAVAILABLE"


class UpstreamRateLimited(UpstreamError):
    code = "UPSTREAM_RATE_LIMITED"


def first_failure(group: BaseExceptionGroup) -> BaseException:
    """The error a caller should see from a group of concurrent failures:
    ours first, in order (an ExceptionGroup itself would be masked)."""
    leaves = _leaves(group)
    return next((e for e in leaves if isinstance(e, AppError)), leaves[0])


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
