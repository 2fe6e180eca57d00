"""Gives every error an `extensions.code` and masks the unexpected ones.

It rewrites results inside the operation, so errors look the same over every
transport: HTTP, SSE, multipart and WebSocket.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import StreamExecutionResult

from gptmini_graphql.errors import (
    GRAPHQL_VALIDATION_FAILED,
    INTERNAL_MESSAGE,
    INTERNAL_SERVER_ERROR,
    AppError,
    first_failure,
)

logger = logging.getLogger("gptmini_graphql.graphql")


class ErrorCodesExtension(SchemaExtension):
    def on_operation(self) -> Iterator[None]:
        yield
        _recode(self.execution_context.result)

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        _recode(result)
        yield


@runtime_checkable
class _WithErrors(Protocol):
    errors: list[GraphQLError] | None


def _recode(result: object) -> None:
    # Results of several kinds (incremental ones among them); those with errors.
    if isinstance(result, _WithErrors) and result.errors:
        result.errors = [coded(error) for error in result.errors]


def coded(error: GraphQLError) -> GraphQLError:
    """Our errors as they are, GraphQL's own with a code, anything else masked."""
    if error.extensions and "code" in error.extensions:
        return error  # already coded (a stream's last result is seen twice)
    original: BaseException | None = error.original_error
    if isinstance(original, BaseExceptionGroup):
        # Concurrent calls fail as a group; the client sees the failure itself.
        original = first_failure(original)
    if isinstance(original, AppError):
        message, extensions = original.message, original.extensions
    elif error.path is None and (
        original is None or isinstance(original, GraphQLError)
    ):
        # No path: raised before execution. The parser (extensions/parsing.py),
        # variable coercion (schema/executor.py) and our own rules code their
        # errors where they raise them; the rest are graphql-core's rules.
        message, extensions = error.message, {"code": GRAPHQL_VALIDATION_FAILED}
    else:
        # A bug of ours, or a library's: the client learns nothing of it.
        logger.error(
            "unexpected error in resolver",
            extra={"path": error.path},
            exc_info=(type(original), original, original.__traceback__)
            if original
            else None,
        )
        message, extensions = INTERNAL_MESSAGE, {"code": INTERNAL_SERVER_ERROR}
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions=extensions,
    )
