"""graphql-core's executor as Strawberry runs it, with the errors of variable
coercion coded BAD_USER_INPUT where they are made: the document is fine, the
values sent for its variables are not (missing, or not of their type)."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError, VariableDefinitionNode
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gptmini_graphql.errors import BadUserInput


class CodedExecutor(StrawberryGraphQLCoreExecutionContext):
    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:
        built = super().build(*args, **kwargs)
        if isinstance(built, list):  # it could not start: these are why
            return [_coded(error) for error in built]
        return built


def _coded(error: GraphQLError) -> GraphQLError:
    nodes = error.nodes or ()
    if nodes and all(isinstance(node, VariableDefinitionNode) for node in nodes):
        error.extensions = {**(error.extensions or {}), "code": BadUserInput.code}
    return error
