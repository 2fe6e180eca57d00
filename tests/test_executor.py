"""schema/executor.py: the objects queries answer, completed through a plan
made once per document, exactly as graphql-core completes them."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
import strawberry
from graphql import DocumentNode, execute, parse
from strawberry.extensions import ParserCache
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gptmini_graphql.schema import executor as executor_module
from gptmini_graphql.schema.executor import CodedExecutor


@strawberry.type
class Inner:
    size: int | None = None
    label: str = "inner"


@strawberry.type
class Piece:
    text: str
    size: int | None = None
    inner: Inner | None = None

    @strawberry.field
    def shout(self) -> str:
        return self.text.upper()


PIECES = {
    "plain": Piece(text="a", size=1, inner=Inner(size=2)),
    "null": Piece(text=None, size=2),  # type: ignore[arg-type]  # null, non-null
    "not-an-int": Piece(text="b", size="many"),  # type: ignore[arg-type]
    "no-inner": Piece(text="c"),
}


@strawberry.type
class Query:
    @strawberry.field
    async def piece(self, kind: str) -> Piece:
        return PIECES[kind]


def _run(
    executor: type, query: str, variables: dict[str, Any] | None = None
) -> tuple[Any, list[Any]]:
    schema = strawberry.Schema(query=Query, execution_context_class=executor)
    result = asyncio.run(schema.execute(query, variable_values=variables))
    return result.data, [error.formatted for error in result.errors or ()]


def planned_objects(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The object types planned from now on, in order (plan_object counted)."""
    planned: list[object] = []
    plan_object = executor_module.plan_object

    def counted_plan(*args: Any) -> Any:
        planned.append(args[1])
        return plan_object(*args)

    monkeypatch.setattr(executor_module, "plan_object", counted_plan)
    return planned


QUERIES = [
    "{ piece(kind: $kind) { text size inner { size label __typename } } }",
    "{ first: piece(kind: $kind) { t: text __typename } second: piece(kind: $kind) "
    "{ ...Sized } } fragment Sized on Piece { size inner { ...Labelled } } "
    "fragment Labelled on Inner { label }",
    "{ piece(kind: $kind) { text shout } }",  # a resolver: not planned
    "{ piece(kind: $kind) { text inner @include(if: $deep) { size } } }",
]


@pytest.mark.parametrize("kind", sorted(PIECES))
@pytest.mark.parametrize("query", QUERIES)
def test_an_answer_is_completed_as_graphql_core_completes_it(
    query: str, kind: str
) -> None:
    query = "query Q($kind: String!, $deep: Boolean = true) " + query
    for deep in (True, False):
        variables = {"kind": kind, "deep": deep}

        ours = _run(CodedExecutor, query, variables)

        assert ours == _run(StrawberryGraphQLCoreExecutionContext, query, variables)


def test_a_documents_selection_is_planned_once_and_read_through_the_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planned = planned_objects(monkeypatch)
    completed: list[object] = []
    complete = executor_module.ObjectPlan.complete

    def counted_complete(self: Any, value: Any) -> Any:
        completed.append(value)
        return complete(self, value)

    monkeypatch.setattr(executor_module.ObjectPlan, "complete", counted_complete)
    # Parsed once, as the server's own cache does (extensions/parsing.py).
    schema = strawberry.Schema(
        query=Query, execution_context_class=CodedExecutor, extensions=[ParserCache]
    )
    query = "query Q($kind: String!) { piece(kind: $kind) { text size } }"

    async def twice() -> list[Any]:
        return [
            (await schema.execute(query, variable_values={"kind": kind})).data
            for kind in ("plain", "no-inner")
        ]

    assert asyncio.run(twice()) == [
        {"piece": {"text": "a", "size": 1}},
        {"piece": {"text": "c", "size": None}},
    ]
    assert [type_.name for type_ in planned] == ["Piece"]  # type: ignore[attr-defined]
    assert completed == [PIECES["plain"], PIECES["no-inner"]]


def test_a_selection_that_variables_can_change_is_planned_for_each_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planned = planned_objects(monkeypatch)
    schema = strawberry.Schema(
        query=Query, execution_context_class=CodedExecutor, extensions=[ParserCache]
    )
    query = (
        "query Q($deep: Boolean!) "
        '{ piece(kind: "plain") { text inner @include(if: $deep) { size } } }'
    )

    async def both() -> list[Any]:
        return [
            (await schema.execute(query, variable_values={"deep": deep})).data
            for deep in (True, False)
        ]

    assert asyncio.run(both()) == [
        {"piece": {"text": "a", "inner": {"size": 2}}},
        {"piece": {"text": "a"}},
    ]
    assert len(planned) == 2


def test_a_plan_is_kept_while_its_document_is() -> None:
    schema = strawberry.Schema(query=Query, execution_context_class=CodedExecutor)
    piece = schema._schema.type_map["Piece"]
    document = parse('{ piece(kind: "plain") { text size } }')

    def plans() -> int:
        gc.collect()
        return sum(key[0] is piece for key in executor_module._OBJECT_PLANS)

    async def run(document: DocumentNode) -> Any:
        return await execute(schema._schema, document, executor_class=CodedExecutor)

    assert asyncio.run(run(document)).data == {"piece": {"text": "a", "size": 1}}
    assert plans() == 1
    del document
    assert plans() == 0


@strawberry.type
class Holder:
    inner: Inner | None = None


HOLDERS = {"with-inner": Holder(inner=Inner(size=3)), "without": Holder()}


@strawberry.type
class NestedQuery:
    @strawberry.field
    def holder(self, kind: str) -> Holder | None:
        return HOLDERS[kind]

    @strawberry.field
    def pieces(self) -> list[Piece]:
        return [Piece(text=str(n)) for n in range(50)]


def _run_nested(
    executor: type, query: str, variables: dict[str, Any]
) -> tuple[Any, list[Any]]:
    schema = strawberry.Schema(query=NestedQuery, execution_context_class=executor)
    result = asyncio.run(schema.execute(query, variable_values=variables))
    return result.data, [error.formatted for error in result.errors or ()]


@pytest.mark.parametrize("kind", sorted(HOLDERS))
def test_a_nested_selection_refused_by_its_variables_fails_where_graphql_core_says(
    kind: str,
) -> None:
    # A null `if:` is refused when graphql-core collects `inner`'s selection:
    # only if `inner` is not null, and at its path, not its parent's.
    query = (
        "query Q($kind: String!, $v: Boolean = true) "
        "{ holder(kind: $kind) { inner { size @include(if: $v) } } }"
    )
    variables = {"kind": kind, "v": None}

    ours = _run_nested(CodedExecutor, query, variables)

    assert ours == _run_nested(StrawberryGraphQLCoreExecutionContext, query, variables)


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ pieces { text shout } }", {}),  # a resolver: never planned
        ("query Q($v: Boolean!) { pieces { text @include(if: $v) } }", {"v": True}),
    ],
)
def test_a_lists_items_are_not_planned_one_by_one(
    monkeypatch: pytest.MonkeyPatch, query: str, variables: dict[str, Any]
) -> None:
    planned = planned_objects(monkeypatch)
    schema = strawberry.Schema(
        query=NestedQuery,
        execution_context_class=CodedExecutor,
        extensions=[ParserCache],
    )

    async def twice() -> None:
        for _ in range(2):
            result = await schema.execute(query, variable_values=variables)
            assert result.errors is None
            assert len(result.data["pieces"]) == 50  # type: ignore[index]

    asyncio.run(twice())

    # At most once per request (a selection variables can change), not per item.
    assert len(planned) <= 2
