"""Our extension runner (extensions/runner.py) runs hooks as Strawberry's
does: the same hooks entered and left in the same order, with the same
errors seen by them, for a query and for a subscription whose stream fails
midway, with one extension and with several."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import Any

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult

from gptmini_graphql.schema import Schema


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "hi"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, to: int) -> AsyncGenerator[int, None]:
        for number in range(to):
            yield number
        raise ValueError("the stream broke")


def _recording(name: str, log: list[str]) -> type[SchemaExtension]:
    class Recording(SchemaExtension):
        async def on_operation(self) -> AsyncIterator[None]:
            log.append(f"{name} operation in")
            yield
            log.append(f"{name} operation out")

        def on_parse(self) -> Iterator[None]:
            log.append(f"{name} parse in")
            yield
            log.append(f"{name} parse out")

        def on_validate(self) -> Iterator[None]:
            log.append(f"{name} validate in")
            try:
                yield
            except Exception as error:  # never: validation raises nothing here
                log.append(f"{name} validate saw {error!r}")
                raise
            log.append(f"{name} validate out")

        async def on_execute(self) -> AsyncIterator[None]:
            log.append(f"{name} execute in")
            yield
            log.append(f"{name} execute out")

        def on_stream_result(self, result: Any) -> Iterator[None]:
            log.append(f"{name} result in {result.data} {result.errors}")
            yield
            log.append(f"{name} result out")

        def get_results(self) -> dict[str, Any]:
            return {name: len(log)}

    return Recording


def _run(schema_class: type[strawberry.Schema], names: list[str]) -> list[Any]:
    log: list[str] = []
    schema = schema_class(
        query=Query,
        subscription=Subscription,
        extensions=[_recording(name, log) for name in names],
    )

    async def run() -> list[Any]:
        query = await schema.execute("{ hello }")
        results = await schema.subscribe("subscription { count(to: 2) }")
        assert not isinstance(results, ExecutionResult)
        events = [
            (event.data, [e.message for e in event.errors or []], event.extensions)
            async for event in results
        ]
        return [query.data, query.extensions, events]

    return [*asyncio.run(run()), log]


@pytest.mark.parametrize("names", [["a"], ["a", "b"]], ids=["one", "two"])
def test_hooks_run_as_strawberrys_runner_runs_them(names: list[str]) -> None:
    ours = _run(Schema, names)
    assert ours == _run(strawberry.Schema, names)
    *_, events, log = ours
    assert [data for data, _, _ in events] == [{"count": 0}, {"count": 1}, None]
    assert events[-1][1] == ["the stream broke"]
    assert f"{names[0]} result in None [GraphQLError('the stream broke'" in " ".join(
        log
    )
