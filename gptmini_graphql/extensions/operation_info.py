"""Notes what an operation is, once parsed, for the rate limit and the log:
its name, its root fields, how many of them call the model, and its inputs
as lengths and hashes (texts only when LOG_TEXTS asks for them).

What depends on the document alone is worked out once per document and
operation name and kept with the parsed document (extensions/parsing.py);
only the variables are described anew for each request.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from graphql import DocumentNode, FragmentDefinitionNode, get_operation_ast
from strawberry.types import ExecutionContext

from gptmini_graphql.context import RequestContext
from gptmini_graphql.extensions.operation_shape import root_field_counts
from gptmini_graphql.extensions.parsing import Document

# Operations whose inputs are credentials: logged as neither text nor hash.
SECRET_FIELDS = frozenset(
    {"login", "refresh", "logout", "changePassword", "createUser"}
)


@dataclass(frozen=True, slots=True)
class OperationFacts:
    """What an operation of a document is, whoever sends it. Shared by the
    requests that send it: never changed once made."""

    root_fields: Counter[str]
    model_calls: int
    secret: bool
    query_sha256: str  # of the document's text, as the log shows it


def describe(
    execution: ExecutionContext,
    document: Document | None,
    llm_fields: frozenset[str],
) -> None:
    """Puts the operation's name, root fields, model calls and inputs on its
    context (`document`: the parsed document's record, when we parsed it)."""
    context: RequestContext = execution.context
    # Known once parsed: the name the client sent, or the operation's own.
    context.operation_name = name = execution.operation_name
    facts = document.operations.get(name) if document is not None else None
    if facts is None:
        facts = _facts(execution, llm_fields)
        if document is not None:
            document.operations[name] = facts
    context.root_fields = facts.root_fields
    context.model_calls = facts.model_calls
    if facts.secret:
        # Even a hash of a short password can be reversed by guessing.
        context.inputs = {"redacted": True}
        return
    query = execution.query or ""
    log_texts = context.services.settings.log_texts
    context.inputs = {
        "query": query
        if log_texts
        else {"chars": len(query), "sha256": facts.query_sha256},
        **{
            name: _described(value, log_texts)
            for name, value in (execution.variables or {}).items()
            if isinstance(value, str)
        },
    }


def _facts(execution: ExecutionContext, llm_fields: frozenset[str]) -> OperationFacts:
    root_fields = _root_fields(execution.graphql_document, execution.operation_name)
    return OperationFacts(
        root_fields=root_fields,
        model_calls=sum(root_fields[f] for f in llm_fields),
        secret=bool(SECRET_FIELDS & root_fields.keys()),
        query_sha256=_sha256(execution.query or ""),
    )


def _described(text: str, log_texts: bool) -> dict[str, Any] | str:
    """Enough to match two requests up, nothing to read a user's text from."""
    if log_texts:
        return text
    return {"chars": len(text), "sha256": _sha256(text)}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


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
