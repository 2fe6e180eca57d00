"""Parses each document once (an LRU cache by its text) and at most so many
tokens of it, and codes what fails: QUERY_TOO_LARGE past the token cap,
GRAPHQL_PARSE_FAILED for a document that is not GraphQL.

In place of Strawberry's MaxTokensLimiter and ParserCache, whose failures
differ only in their message text (graphql-core raises a GraphQLSyntaxError
either way): the code is decided here, by what the parser did, so that a
library upgrade cannot change it by rewording.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import lru_cache

from graphql import DocumentNode, GraphQLError, parse
from strawberry.extensions import SchemaExtension

from gptmini_graphql.errors import GRAPHQL_PARSE_FAILED, QUERY_TOO_LARGE

Parse = Callable[[str], DocumentNode]


def document_parser(*, max_tokens: int, cache_size: int) -> Parse:
    """One schema's parser: share it between the requests (its cache is the
    point), through `DocumentParsing`."""

    @lru_cache(maxsize=cache_size)  # a failure is raised, never cached
    def parse_document(query: str) -> DocumentNode:
        try:
            return parse(query, max_tokens=max_tokens)
        except GraphQLError as error:
            code = QUERY_TOO_LARGE if _past_cap(query, error, max_tokens) else None
            raise _coded(error, code or GRAPHQL_PARSE_FAILED) from None

    return parse_document


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


class DocumentParsing(SchemaExtension):
    """Hands Strawberry the document `parse` made of the query (pass as a
    factory: `lambda: DocumentParsing(parse)`)."""

    def __init__(self, parse: Parse) -> None:
        self.parse = parse

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None:  # Strawberry refuses a missing one
            context.graphql_document = self.parse(context.query)
        yield
