"""Over a WebSocket, Strawberry hands every operation of a connection the
same context; this gives each operation a context of its own (who calls,
what it asked, what it cost) and, for queries and mutations, its log line.
Over HTTP the context is the request's own already."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

from strawberry.types import ExecutionContext

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import INTERNAL_SERVER_ERROR
from gptmini_graphql.operation_log import log_operation
from gptmini_graphql.spend.enforcement import Left


def scope_operation(execution: ExecutionContext) -> RequestContext | None:
    """The operation's own context, put in place, if it came over a WebSocket
    (None over HTTP)."""
    connection: RequestContext = execution.context
    if connection.connection.scope["type"] != "websocket":
        return None
    operation = dataclasses.replace(
        connection,
        started=time.perf_counter(),
        root_fields=Counter(),
        inputs={},
        results=[],
        operation_name=None,
        budget_left=Left(),
        response_headers={},
    )
    execution.context = operation
    return operation


def log_scoped(operation: RequestContext, execution: ExecutionContext) -> None:
    """The log line of a WebSocket's query or mutation, once it ran (a
    subscription logs itself when its stream ends: StreamLog)."""
    if operation.streaming:
        return
    errors = getattr(execution.result, "errors", None) or []
    codes = [
        (error.extensions or {}).get("code", INTERNAL_SERVER_ERROR) for error in errors
    ]
    log_operation(operation, codes)
