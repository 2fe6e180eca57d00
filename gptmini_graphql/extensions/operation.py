"""What every operation goes through around Strawberry's parse, validate and
execute, in one extension:

    operation   its own context over a WebSocket (operation_scope.py), then
                the caller (auth.py); afterwards its errors coded
                (errors.py) and, over a WebSocket, its log line
    parse       the document, from the cache by its text (parsing.py)
    validate    its validation errors, from the same cache
    execute     its name, root fields and inputs (operation_info.py), then
                the rate limit (rate_limit.py)
    results     each streamed result's errors coded; `extensions.budgets`

One extension, not one per step: Strawberry looks up each extension's hooks
and wraps each hook in a context manager of its own on every request, which
for eight extensions was a tenth of a cache hit's CPU.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.types.execution import StreamExecutionResult

from gptmini_graphql.extensions import operation_info
from gptmini_graphql.extensions.auth import identify_caller
from gptmini_graphql.extensions.errors import recode
from gptmini_graphql.extensions.operation_scope import log_scoped, scope_operation
from gptmini_graphql.extensions.parsing import Document, Documents
from gptmini_graphql.extensions.rate_limit import budgets_left, charge


class OperationExtension(SchemaExtension):
    """Pass as a factory (`lambda: OperationExtension(documents, llm_fields)`):
    an instance holds one operation's state."""

    def __init__(self, documents: Documents, llm_fields: frozenset[str]) -> None:
        self.documents = documents
        self.llm_fields = llm_fields
        self.document: Document | None = None

    async def on_operation(self) -> AsyncIterator[None]:
        execution = self.execution_context
        scoped = scope_operation(execution)
        await identify_caller(execution.context)
        yield
        # Coded first: the WebSocket's log line reads the codes.
        recode(execution.result)
        if scoped is not None:
            log_scoped(scoped, execution)

    def on_parse(self) -> Iterator[None]:
        execution = self.execution_context
        if execution.query is not None:  # Strawberry refuses a missing one
            self.document = self.documents.get(execution.query)
            execution.graphql_document = self.document.node
        yield

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        if self.document is not None:
            execution.pre_execution_errors = self.documents.validated(
                self.document, execution.schema._schema
            )
        yield

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        operation_info.describe(execution, self.document, self.llm_fields)
        await charge(execution)
        yield

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        recode(result)
        yield

    def get_results(self) -> dict[str, Any]:
        return budgets_left(self.execution_context.context)
