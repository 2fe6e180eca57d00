"""graphql-core's executor as Strawberry runs it, with the errors of variable
coercion coded BAD_USER_INPUT where they are made: the document is fine, the
values sent for its variables are not (missing, or not of their type).

It also lets go of itself once its result is complete: graphql-core's
executor holds helpers bound to itself (`async_helpers`), a reference cycle
that kept every operation's executor, context and result waiting for the
garbage collector, whose passes were a tenth of a cache hit's CPU.

And a subscription's events are read through a plan made once (events.py)
rather than each run on a copy of the executor, when its selection allows.
So is the object a query's field answers (a `Summary` and its `usage`): its
selection planned once per document, while graphql-core would resolve and
complete each of its fields through the whole executor on every request.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable
from typing import Any

from graphql import (
    ExecutionResult,
    FieldNode,
    GraphQLError,
    GraphQLObjectType,
    OperationType,
    VariableDefinitionNode,
)
from graphql.execution.collect_fields import FieldDetailsList, FragmentDetails
from graphql.pyutils import AwaitableOrValue, Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gptmini_graphql.errors import BadUserInput
from gptmini_graphql.schema.events import (
    EventPlan,
    ObjectPlan,
    Unplanned,
    fixed,
    plan,
    plan_object,
)

_UNPLANNED = object()  # not planned yet

logger = logging.getLogger("gptmini_graphql.graphql")


class CodedExecutor(StrawberryGraphQLCoreExecutionContext):
    @classmethod
    def build(cls, *args: Any, **kwargs: Any) -> Any:
        built = super().build(*args, **kwargs)
        if isinstance(built, list):  # it could not start: these are why
            return coded_build_errors(built)
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
            except GraphQLError:
                # The caller's selection, refused (a directive's variable that
                # is null): the executor reports it, in the events it concerns.
                event_plan = None
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

    def collect_and_execute_subfields(
        self,
        return_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        path: Path,
        result: Any,
        position_context: Any,
    ) -> AwaitableOrValue[dict[str, Any]]:
        """The object read through its selection's plan, when it has one and
        the plan can read it; else (an error to report, say) graphql-core's
        own completion, from the start: reading a plain field has no effect."""
        root = self._object_plan(return_type, field_details_list)
        signal = self.abort_signal
        if root is not None and (signal is None or not signal.aborted):
            try:
                return ObjectPlan(root, self.is_awaitable).complete(result)
            except Unplanned:
                pass
        return super().collect_and_execute_subfields(
            return_type, field_details_list, path, result, position_context
        )

    def _object_plan(
        self, object_type: GraphQLObjectType, details: FieldDetailsList
    ) -> Any:
        # Planned once for a document's fields: the parser's cache hands every
        # request the same nodes (extensions/parsing.py), and the plan goes
        # when they do. Not kept when variables could change the selection (a
        # directive, fragment arguments): planned once for this request (a
        # list's items share it). "No plan" is kept as a plan is: a selection
        # that cannot be planned is not tried again for every object.
        manager = self.middleware_manager
        if manager is not None and manager.middlewares:
            return None  # an extension resolves each field itself
        nodes = [detail.node for detail in details]
        key = (object_type, *map(id, nodes))
        cached = _OBJECT_PLANS.get(key)
        if cached is not None and all(
            ref() is node for ref, node in zip(cached[0], nodes, strict=True)
        ):
            return cached[1]
        this_request = self.__dict__.setdefault("_object_plans", {})
        if (planned := this_request.get((object_type, id(details)))) is not None:
            return planned[1]
        try:
            root = plan_object(self, object_type, details)
        except Exception:
            # A selection graphql-core refuses (a directive's variable that
            # is null, say): it raises it where and when it collects it (only
            # for an object that is not null), which the plan cannot do.
            root = None
        if not _fixed(details, self.fragments):
            # `details` kept with its plan: its id names no other list meanwhile.
            this_request[object_type, id(details)] = (details, root)
            return root

        def forget(_: object) -> None:
            _OBJECT_PLANS.pop(key, None)

        refs = tuple(weakref.ref(node, forget) for node in nodes)
        _OBJECT_PLANS[key] = (refs, root)
        return root

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


# Plans of the objects queries answer, by their type and the ids of their
# field nodes (a node's own hash and equality are its structure's): a few
# per document the parser's cache holds, each gone with its nodes.
_OBJECT_PLANS: dict[
    tuple[Any, ...], tuple[tuple[weakref.ref[FieldNode], ...], Any]
] = {}


def _fixed(details: FieldDetailsList, fragments: dict[str, FragmentDetails]) -> bool:
    """Whether the selection below these fields is the same whatever the
    variables (events.fixed), given no fragment arguments reach them."""
    if any(detail.fragment_variable_values for detail in details):
        return False
    return fixed(
        [d.node.selection_set for d in details if d.node.selection_set], fragments
    )


def coded_build_errors(errors: list[GraphQLError]) -> list[GraphQLError]:
    """Why an executor could not be built, those about variables' values
    coded BAD_USER_INPUT."""
    for error in errors:
        nodes = error.nodes or ()
        if nodes and all(isinstance(node, VariableDefinitionNode) for node in nodes):
            error.extensions = {**(error.extensions or {}), "code": BadUserInput.code}
    return errors
