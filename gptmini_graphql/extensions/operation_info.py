"""Notes what an operation is, once parsed, for the rate limit and the log:
its name, its root fields, how many of them call the model, and its inputs
as lengths and hashes (texts only when LOG_TEXTS asks for them)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

from graphql import DocumentNode, FragmentDefinitionNode, get_operation_ast
from strawberry.extensions import SchemaExtension

from gptmini_graphql.context import RequestContext
from gptmini_graphql.extensions.operation_shape import root_field_counts

# Operations whose inputs are credentials: logged as neither text nor hash.
SECRET_FIELDS = frozenset(
    {"login", "refresh", "logout", "changePassword", "createUser"}
)


class OperationInfoExtension(SchemaExtension):
    def __init__(self, *, llm_fields: frozenset[str]) -> None:
        super().__init__()
        self.llm_fields = llm_fields

    def on_execute(self) -> Iterator[None]:
        execution = self.execution_context
        context: RequestContext = execution.context
        # Known once parsed: the name the client sent, or the operation's own.
        context.operation_name = execution.operation_name
        context.root_fields = _root_fields(
            execution.graphql_document, execution.operation_name
        )
        context.model_calls = sum(context.root_fields[f] for f in self.llm_fields)
        if SECRET_FIELDS & context.root_fields.keys():
            # Even a hash of a short password can be reversed by guessing.
            context.inputs = {"redacted": True}
            yield
            return
        log_texts = context.services.settings.log_texts
        context.inputs = {
            "query": _described(execution.query or "", log_texts),
            **{
                name: _described(value, log_texts)
                for name, value in (execution.variables or {}).items()
                if isinstance(value, str)
            },
        }
        yield


def _described(text: str, log_texts: bool) -> dict[str, Any] | str:
    """Enough to match two requests up, nothing to read a user's text from."""
    if log_texts:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return {"chars": len(text), "sha256": digest[:16]}


def _root_fields(
    document: DocumentNode | None, operation_name: str | None
) -> Counter[str]:
    if document is None:
        return Counter()
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return Counter()
    fragments = {
        node.name.value: node
        for node in document.definitions
        if isinstance(node, FragmentDefinitionNode)
    }
    return root_field_counts(operation.selection_set, fragments.get)
