"""schema/prepared.py: an operation run through its plan answers exactly as
graphql-core's executor answers it (data, errors with their messages,
locations, paths and codes, what the resolvers were called with), for
documents that qualify and, through graphql-core, those that do not."""

from __future__ import annotations

import asyncio
import enum
import gc
from typing import Any

import pytest
import strawberry
from graphql import DocumentNode, MiddlewareManager, parse, validate
from graphql import execute as graphql_execute
from strawberry.execution import optimized_is_awaitable

from gptmini_graphql.errors import BadUserInput
from gptmini_graphql.schema import prepared
from gptmini_graphql.schema.executor import CodedExecutor

CALLS: list[tuple[str, Any]] = []


@strawberry.enum
class Mood(enum.Enum):
    GOOD = "good"
    BAD = "bad"


@strawberry.type
class Usage:
    tokens: int
    cost: float | None = None


@strawberry.interface
class Result:
    text: str


@strawberry.type
class Answer(Result):
    mood: Mood = Mood.GOOD
    usage: Usage | None = None
    words: list[str] = strawberry.field(default_factory=list)

    @strawberry.field
    def shout(self) -> str:
        return self.text.upper()


@strawberry.input
class Options:
    limit: int = 3
    mood: Mood | None = None


def _answer(kind: str, text: str) -> Any:
    """What a resolver gives back for `kind`: an answer, or something the
    executor must refuse or report."""
    CALLS.append((kind, text))
    if kind == "plain":
        return Answer(text=text, usage=Usage(tokens=len(text), cost=0.5))
    if kind == "no-usage":
        return Answer(text=text)
    if kind == "null-text":
        return Answer(text=None)  # type: ignore[arg-type]
    if kind == "bad-tokens":
        return Answer(text=text, usage=Usage(tokens="many"))  # type: ignore[arg-type]
    if kind == "null":
        return None
    if kind == "app-error":
        raise BadUserInput("That text will not do.")
    if kind == "bug":
        raise RuntimeError("a bug")
    if kind == "wrong-type":
        return Usage(tokens=1)  # not an Answer: its is_type_of says so
    if kind == "returns-error":
        return ValueError("returned, not raised")
    raise AssertionError(kind)


KINDS = [
    "plain",
    "no-usage",
    "null-text",
    "bad-tokens",
    "null",
    "app-error",
    "bug",
    "returns-error",
    "wrong-type",
]


@strawberry.type
class Query:
    @strawberry.field
    async def answer(self, kind: str, text: str = "hello") -> Answer:
        return _answer(kind, text)  # type: ignore[no-any-return]

    @strawberry.field
    async def maybe(self, kind: str, options: Options | None = None) -> Answer | None:
        return _answer(kind, repr(options))  # type: ignore[no-any-return]

    @strawberry.field
    def sync_answer(self, kind: str) -> Answer:
        return _answer(kind, "sync")  # type: ignore[no-any-return]

    @strawberry.field
    async def count(self, kind: str, times: int = 2) -> int | None:
        _answer(kind, str(times))
        return times * 2

    @strawberry.field
    def mood(self, mood: Mood) -> Mood:
        CALLS.append(("mood", mood))
        return mood

    @strawberry.field
    def answers(self) -> list[Answer]:
        return [Answer(text="a"), Answer(text="b")]


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def remember(self, kind: str, text: str) -> Answer:
        return _answer(kind, text)  # type: ignore[no-any-return]


SCHEMA = strawberry.Schema(
    query=Query, mutation=Mutation, execution_context_class=CodedExecutor
)

# (document, whether its operation qualifies for a plan)
DOCUMENTS: list[tuple[str, bool]] = [
    (
        "query Q($kind: String!) "
        "{ answer(kind: $kind) { text mood usage { tokens cost } } }",
        True,
    ),
    (
        'query Q($kind: String!) { a: answer(kind: $kind, text: "lit") { t: text } }',
        True,
    ),
    ("query Q($kind: String!) { maybe(kind: $kind) { text usage { tokens } } }", True),
    (
        "query Q($kind: String!, $limit: Int = 7) "
        "{ maybe(kind: $kind, options: {limit: $limit, mood: BAD}) { text } }",
        True,
    ),
    ("query Q($kind: String!) { syncAnswer(kind: $kind) { text __typename } }", True),
    (
        "query Q($kind: String!, $times: Int) { count(kind: $kind, times: $times) }",
        True,
    ),
    ("query Q($mood: Mood!) { mood(mood: $mood) }", True),
    (
        "query Q($kind: String!) { answer(kind: $kind) { ...A usage { ... on Usage "
        "{ tokens } } } } fragment A on Answer { text mood }",
        True,
    ),
    (
        "mutation M($kind: String!, $text: String!) { remember(kind: $kind, text: $text) "
        "{ text } }",
        True,
    ),
    # Not planned: graphql-core runs them.
    ("query Q($kind: String!) { answer(kind: $kind) { text shout } }", False),
    ("query Q($kind: String!) { answer(kind: $kind) { text words } }", False),
    (
        "query Q($kind: String!) { a: answer(kind: $kind) { text } b: count(kind: $kind) }",
        False,
    ),
    (
        "query Q($kind: String!, $deep: Boolean = true) "
        "{ answer(kind: $kind) { text usage @include(if: $deep) { tokens } } }",
        False,
    ),
    ("query Q { answers { text } }", False),
    ("query Q { __typename }", False),
    (
        "query Q($kind: String!) { answer(kind: $kind) { text } } query R { __typename }",
        True,
    ),
]

VARIABLES: list[dict[str, Any] | None] = [
    *({"kind": kind, "text": "some text", "mood": "GOOD"} for kind in KINDS),
    {"kind": "plain", "times": 5, "limit": 1, "text": "t", "mood": "BAD"},
    {"kind": "plain", "times": None, "limit": None, "text": "t", "mood": "GOOD"},
    # Variables that do not coerce: a request error, coded.
    {"kind": 5, "text": "t", "mood": "good"},
    {"times": "x", "limit": "y", "mood": "SAD"},
    {},
    None,
]


def _outcome(result: Any) -> tuple[Any, list[Any], list[Any]]:
    errors = result.errors or []
    return (
        result.data,
        [error.formatted for error in errors],
        [type(error.original_error) for error in errors],
    )


async def _both(
    document: DocumentNode, variables: dict[str, Any] | None, operation: str | None
) -> tuple[Any, Any]:
    options = {
        "middleware": MiddlewareManager(),
        "is_awaitable": optimized_is_awaitable,
        "executor_class": CodedExecutor,
        "operation_extensions": {"an": "extension"},
    }
    outcomes = []
    for execute in (prepared.execute, graphql_execute):
        CALLS.clear()
        result = execute(
            SCHEMA._schema,
            document,
            None,
            {"a": "context"},
            variables,
            operation,
            **options,
        )
        if optimized_is_awaitable(result):
            result = await result
        outcomes.append((_outcome(result), list(CALLS)))
    return outcomes[0], outcomes[1]


@pytest.mark.parametrize(("query", "qualifies"), DOCUMENTS)
def test_an_operation_answers_as_graphql_core_answers_it(
    query: str, qualifies: bool
) -> None:
    document = parse(query)
    assert validate(SCHEMA._schema, document) == []
    operation = "Q" if "query R" in query else None
    plan = prepared.prepared(SCHEMA._schema, document, operation)
    assert (plan is not None) is qualifies

    for variables in VARIABLES:
        ours, graphql_cores = asyncio.run(_both(document, variables, operation))

        assert ours == graphql_cores, variables


def test_variables_that_do_not_coerce_are_bad_user_input() -> None:
    document = parse("query Q($kind: String!) { answer(kind: $kind) { text } }")

    ours, _ = asyncio.run(_both(document, {"kind": 5}, None))

    (data, errors, _), calls = ours
    assert data is None and calls == []
    assert [error["extensions"]["code"] for error in errors] == [BadUserInput.code]


def test_an_operation_that_cannot_be_picked_is_graphql_cores_to_report() -> None:
    document = parse("query Q { __typename } query R { __typename }")

    assert prepared.prepared(SCHEMA._schema, document, None) is None
    assert prepared.prepared(SCHEMA._schema, document, "S") is None
    ours, graphql_cores = asyncio.run(_both(document, None, "S"))
    assert ours == graphql_cores
    assert ours[0][1][0]["message"] == "Unknown operation named 'S'."


def test_names_of_no_operation_are_not_kept() -> None:
    document = parse("query Q { __typename }")
    kept = len(prepared._PREPARED)

    for name in ("R", "S", "T"):
        assert prepared.prepared(SCHEMA._schema, document, name) is None

    assert len(prepared._PREPARED) == kept


def test_a_middleware_takes_graphql_cores_path() -> None:
    document = parse('query Q { count(kind: "plain") }')
    seen: list[str] = []

    def middleware(next_: Any, root: Any, info: Any, **args: Any) -> Any:
        seen.append(info.field_name)
        return next_(root, info, **args)

    result = asyncio.run(
        prepared.execute(  # type: ignore[misc]
            SCHEMA._schema,
            document,
            middleware=MiddlewareManager(middleware),
            is_awaitable=optimized_is_awaitable,
            executor_class=CodedExecutor,
        )
    )

    assert result.data == {"count": 4}
    assert seen == ["count"]


def test_a_plan_is_made_once_per_document_and_kept_while_it_is() -> None:
    document = parse('query Q { count(kind: "plain") }')

    plan = prepared.prepared(SCHEMA._schema, document, None)

    assert plan is not None
    assert prepared.prepared(SCHEMA._schema, document, None) is plan
    key = (id(SCHEMA._schema), id(document), None)
    assert key in prepared._PREPARED
    del document, plan
    gc.collect()
    assert key not in prepared._PREPARED


def test_a_schema_runs_its_queries_through_the_plans() -> None:
    """The server's schema uses the plans (Schema._get_execute_function)."""
    from gptmini_graphql.schema import build_schema

    schema = build_schema()
    assert schema._get_execute_function() is prepared.execute


def test_a_resolver_error_is_located_as_graphql_core_locates_it() -> None:
    document = parse('query Q { answer(kind: "app-error") { text } }')

    ours, _ = asyncio.run(_both(document, None, None))

    (data, errors, originals), _ = ours
    assert data is None
    assert errors == [
        {
            "message": "That text will not do.",
            "locations": [{"line": 1, "column": 11}],
            "path": ["answer"],
            "extensions": {"code": BadUserInput.code},
        }
    ]
    assert originals == [BadUserInput]


def test_a_document_run_on_another_schema_runs_that_schemas_resolvers() -> None:
    """A plan belongs to its schema: the same parsed document executed on a
    second schema (one app's cache of documents, say, shared by two) is that
    schema's to resolve, as graphql-core would."""

    def schema_answering(word: str) -> strawberry.Schema:
        @strawberry.type
        class WordQuery:
            @strawberry.field
            def word(self) -> str:
                return word

        return strawberry.Schema(query=WordQuery, execution_context_class=CodedExecutor)

    document = parse("query Q { word }")
    answers = []
    for schema in (schema_answering("first"), schema_answering("second")):
        result = asyncio.run(
            prepared.execute(  # type: ignore[misc]
                schema._schema,
                document,
                middleware=MiddlewareManager(),
                is_awaitable=optimized_is_awaitable,
                executor_class=CodedExecutor,
            )
        )
        answers.append(result.data)

    assert answers == [{"word": "first"}, {"word": "second"}]
