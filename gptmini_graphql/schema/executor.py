"""graphql-core's executor as Strawberry runs it, with the errors of variable
coercion coded BAD_USER_INPUT where they are made: the document is fine, the
values sent for its variables are not (missing, or not of their type).

It also lets go of itself once its result is complete: graphql-core's
executor holds helpers bound to itself (`async_helpers`), a reference cycle
that kept every operation's executor, context and result waiting for the
garbage collector, whose passes were a tenth of a cache hit's CPU.

And a subscription's events are read through a plan made once (events.py)
rather than each run on a copy of the executor, when its selection allows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from graphql import (
    ExecutionResult,
    GraphQLError,
    OperationType,
    VariableDefinitionNode,
)
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gptmini_graphql.errors import BadUserInput
from gptmini_graphql.schema.events import EventPlan, Unplanned, plan

_UNPLANNED = object()  # not planned yet

logger = logging.getLogger("gptmini_graphql.graphql")


class CodedExecutor(StrawberryGraphQLCoreExecutionContext):
    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:
        built = super().build(*args, **kwargs)
        if isinstance(built, list):  # it could not start: these are why
            return [_coded(error) for error in built]
        assert isinstance(built, CodedExecutor)
        if built.operation.operation is OperationType.SUBSCRIPTION:
            # Planned at the stream's first wait (for its caller, its budget,
            # its upstream), not in its first event's time to first token.
            asyncio.get_running_loop().call_soon(built.event_plan)
        return built

    def event_plan(self) -> EventPlan | None:
        """This subscription's plan of its events, made once; None: it has none."""
        event_plan = self.__dict__.get("_event_plan", _UNPLANNED)
        if event_plan is _UNPLANNED:
            try:
                event_plan = plan(self)
            except Exception:
                # A bug in planning must cost the shortcut, not the stream:
                # every event is then the executor's, as without a plan. (Left
                # to raise, it failed each event, and its first call, made by
                # the loop, was only the loop's log line.)
                logger.exception("subscription not planned")
                event_plan = None
            self.__dict__["_event_plan"] = event_plan
        return event_plan  # type: ignore[no-any-return]

    def build_per_event_executor(self, payload: Any) -> Any:
        """What runs one event of this subscription: its plan, if it has one."""
        event_plan = self.event_plan()
        if event_plan is None:
            return super().build_per_event_executor(payload)
        return _PlannedEvent(self, event_plan, payload)

    def execute_operation(self, serially: bool | None = None) -> Any:
        result = super().execute_operation(serially)
        if self.is_awaitable(result):
            return self._released_after(result)
        self._release(result)
        return result

    async def _released_after(self, result: Awaitable[Any]) -> Any:
        done = await result
        self._release(done)
        return done

    def _release(self, result: object) -> None:
        # Only a complete result: an incremental one (@defer, @stream) goes
        # on using its executor. Each subscription event runs on a copy of
        # the subscription's executor, so the copy is what lets go.
        if isinstance(result, ExecutionResult):
            self.__dict__.pop("async_helpers", None)


class _PlannedEvent:
    """One event, read through its subscription's plan, or run on a copy of
    the executor as graphql-core would when the plan gives up on it."""

    __slots__ = ("event", "executor", "plan")

    def __init__(self, executor: CodedExecutor, plan: EventPlan, event: Any) -> None:
        self.executor = executor
        self.plan = plan
        self.event = event

    def execute_operation(self, serially: bool | None = None) -> Any:
        signal = self.executor.abort_signal
        if signal is None or not signal.aborted:  # else the executor raises
            try:
                return ExecutionResult(self.plan.data(self.event))
            except Unplanned:
                pass
        executor = super(CodedExecutor, self.executor).build_per_event_executor(
            self.event
        )
        return executor.execute_operation(serially)


def _coded(error: GraphQLError) -> GraphQLError:
    nodes = error.nodes or ()
    if nodes and all(isinstance(node, VariableDefinitionNode) for node in nodes):
        error.extensions = {**(error.extensions or {}), "code": BadUserInput.code}
    return error
