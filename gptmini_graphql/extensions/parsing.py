"""Each document parsed and validated once: an LRU cache by its text of the
parsed document, its validation errors and what each of its operations is
(extensions/operation_info.py). A repeated request pays for none of it
again, nor for hashing the whole syntax tree as Strawberry's
ValidationCache does on every request to find its entry.

At most so many tokens of a document are parsed, and what fails is coded:
QUERY_TOO_LARGE past the token cap, GRAPHQL_PARSE_FAILED for a document
that is not GraphQL. In place of Strawberry's MaxTokensLimiter and
ParserCache, whose failures differ only in their message text (graphql-core
raises a GraphQLSyntaxError either way): the code is decided here, by what
the parser did, so that a library upgrade cannot change it by rewording.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    GraphQLSchema,
    parse,
    specified_rules,
)
from strawberry.schema.schema import validate_document

from gptmini_graphql.errors import GRAPHQL_PARSE_FAILED, QUERY_TOO_LARGE

if TYPE_CHECKING:
    from gptmini_graphql.extensions.operation_info import OperationFacts


@dataclass(slots=True)
class Document:
    """A parsed document and what was learnt of it, shared by every request
    that sends the same text (read-only for them)."""

    node: DocumentNode
    # None until validated.
    errors: list[GraphQLError] | None = None
    # By the operationName a request names (None: the document's only one).
    operations: dict[str | None, OperationFacts] = field(default_factory=dict)


class Documents:
    """One schema's documents: share it between the requests (its cache is the
    point). `rules`: the validation rules of ours, beside the specification's
    (and the two Strawberry adds to every validation)."""

    def __init__(
        self,
        *,
        max_tokens: int,
        cache_size: int,
        rules: Sequence[type[ASTValidationRule]],
    ) -> None:
        self.max_tokens = max_tokens
        self.rules = (*specified_rules, *rules)
        # A failure is raised, never cached.
        self.get: Callable[[str], Document] = lru_cache(maxsize=cache_size)(self._parse)

    def validated(self, document: Document, schema: GraphQLSchema) -> list[Any]:
        """Its validation errors ([] if none), found the first time asked."""
        if document.errors is None:
            document.errors = validate_document(schema, document.node, self.rules)
        return document.errors

    def _parse(self, query: str) -> Document:
        try:
            return Document(parse(query, max_tokens=self.max_tokens))
        except GraphQLError as error:
            past_cap = _past_cap(query, error, self.max_tokens)
            code = QUERY_TOO_LARGE if past_cap else GRAPHQL_PARSE_FAILED
            raise _coded(error, code) from None


def _past_cap(query: str, error: GraphQLError, max_tokens: int) -> bool:
    """Whether the token cap stopped the parser: with a higher cap it gets
    further (or through). A document wrong within the cap fails at the same
    place again. Costs a second parse, as bounded, only for a failure."""
    try:
        parse(query, max_tokens=2 * max_tokens)
    except GraphQLError as again:
        return again.positions != error.positions
    return True


def _coded(error: GraphQLError, code: str) -> GraphQLError:
    return GraphQLError(
        error.message,
        source=error.source,
        positions=error.positions,
        extensions={"code": code},
    )
