"""Per-user rate limits: each LLM-backed field of an operation counts once."""

from __future__ import annotations

from collections.abc import AsyncIterator

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    SelectionSetNode,
    get_operation_ast,
)
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from gptmini_graphql.context import RequestContext
from gptmini_graphql.errors import RateLimited

LLM_FIELDS = frozenset(
    {"summarize", "translate", "complete", "analyze", "completeStream"}
)


class RateLimitExtension(SchemaExtension):
    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context: RequestContext = execution.context
        # Known once parsed: the name the client sent, or the operation's own.
        context.operation_name = execution.operation_name
        context.fields = root_fields(
            execution.graphql_document, execution.operation_name
        )
        cost = sum(name in LLM_FIELDS for name in context.fields)
        if cost and context.user is not None:
            services = context.services
            try:
                await services.limiter.hit(
                    services.settings.rate_limits, "user", context.user, cost=cost
                )
            except RateLimited as refusal:
                if execution.operation_type is OperationType.SUBSCRIPTION:
                    # A subscription starts whatever result is set; raised here,
                    # the error is the stream's one event instead.
                    raise
                # A result set before execution replaces it: nothing runs.
                execution.result = ExecutionResult(
                    data=None,
                    errors=[GraphQLError(refusal.message, original_error=refusal)],
                )
        yield


def root_fields(document: DocumentNode | None, operation_name: str | None) -> list[str]:
    """Names of the operation's top-level fields, through fragments, with repeats.

    Five aliased `summarize` fields are five names: each costs one request.
    """
    operation = get_operation_ast(document, operation_name) if document else None
    if operation is None:
        return []
    fragments = {
        node.name.value: node
        for node in document.definitions
        if isinstance(node, FragmentDefinitionNode)
    }
    names: list[str] = []

    def walk(selection_set: SelectionSetNode) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                names.append(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                walk(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                # Validation has already refused unknown and cyclic fragments.
                walk(fragments[selection.name.value].selection_set)

    walk(operation.selection_set)
    return names
