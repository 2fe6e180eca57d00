"""An operation of a document already parsed and validated, executed through
a plan made once per document instead of through graphql-core's executor.

graphql-core builds an executor for every request (a dozen attributes, its
error collection, its helpers), collects the operation's root fields again,
and resolves and completes each through a chain of generic steps. For an
operation of one root field that is the same every time: so when a
document's operation is of the shape below, `prepare` works out once what
the executor would (the operation, the root field's definition, nodes and
path, the plan of its selection), and `PreparedOperation.execute` does per
request only what depends on the request, each step graphql-core's own:

    variables   coerced by graphql-core's `get_variable_values`, its errors
                coded as CodedExecutor codes them (a request error)
    arguments   graphql-core's `get_argument_values`
    info        Strawberry's own `build_resolve_info`
    resolver    the field's, as the executor calls it (Strawberry's wrapper
                and all: arguments converted, field extensions, permissions)
    value       null checked and located as `complete_value` does; a leaf by
                `complete_leaf_value`; an object's type checked by its
                `is_type_of`, then its fields read through its selection's
                plan (events.py) or, where the plan gives up on a value, by
                a CodedExecutor built for that value's completion alone
    errors      located and propagated as `handle_field_error` and
                `execute_operation` do

A document qualifies (else graphql-core runs it, as before) when its
operation is a query or a mutation that selects exactly one field of its
root type, not an introspection field, with no directive anywhere in the
document (an @include or @skip reads variables; an operation's own
directives change error propagation), no fragment with variables, and whose
type is a scalar, an enum, or an object type whose selection events.py
can plan. tests/test_prepared.py runs both paths on many documents and
variables, errors among them, and compares.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLEnumType,
    GraphQLField,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLScalarType,
    GraphQLSchema,
    Node,
    OperationDefinitionNode,
    OperationType,
    Undefined,
    located_error,
)
from graphql import execute as graphql_execute
from graphql.execution import Executor
from graphql.execution.collect_fields import (
    FieldDetails,
    FieldDetailsList,
    FragmentDetails,
)
from graphql.execution.executor import (
    CollectedErrors,
    default_field_resolver,
    default_type_resolver,
    invalid_return_type_error,
)
from graphql.execution.middleware import MiddlewareManager
from graphql.execution.values import (
    VariableValues,
    get_argument_values,
    get_variable_values,
)
from graphql.language import Visitor, visit
from graphql.pyutils import AwaitableOrValue, Path, gather_with_cancel
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gptmini_graphql.schema.events import ObjectPlan, Unplanned, plan_object
from gptmini_graphql.schema.executor import coded_build_errors

logger = logging.getLogger("gptmini_graphql.graphql")

# graphql-core's own default (execute's max_coercion_errors).
MAX_COERCION_ERRORS = 50


@dataclass(frozen=True, slots=True)
class PreparedOperation:
    """One operation of one document, ready to run for any request."""

    schema: GraphQLSchema
    operation: OperationDefinitionNode
    fragment_definitions: dict[str, FragmentDefinitionNode]
    fragments: dict[str, FragmentDetails]
    root_type: GraphQLObjectType
    key: str  # the response key: the field's alias, or its name
    field_def: GraphQLField
    details: FieldDetailsList
    field_nodes: list[FieldNode]
    path: Path
    non_null: bool
    leaf: GraphQLScalarType | GraphQLEnumType | None
    object_type: GraphQLObjectType | None  # when not a leaf
    object_plan: Any  # the object's selection planned (events.py), if not a leaf

    async def execute(
        self,
        *,
        root_value: Any,
        context_value: Any,
        variable_values: dict[str, Any] | None,
        is_awaitable: Callable[[Any], bool],
        executor_class: type[Executor[Any]],
        middleware: MiddlewareManager | None,
        operation_extensions: dict[str, Any] | None,
    ) -> ExecutionResult:
        """The operation's result, as graphql-core's `execute` would give it."""
        coerced = get_variable_values(
            self.schema,
            self.operation.variable_definitions or (),
            variable_values or {},
            max_errors=MAX_COERCION_ERRORS,
        )
        if isinstance(coerced, list):
            return ExecutionResult(None, coded_build_errors(coerced))
        request = _Request(
            self, root_value, context_value, coerced, is_awaitable, operation_extensions
        )
        info = StrawberryGraphQLCoreExecutionContext.build_resolve_info(
            request,  # type: ignore[arg-type]  # what the method reads of an executor
            self.field_def,
            [*self.field_nodes],  # the executor hands each resolver a list of its own
            self.root_type,
            self.path,
        )
        resolve = self.field_def.resolve or default_field_resolver
        # No middleware is all Strawberry passes here: its manager, empty,
        # hands the resolver back as it is.
        executor: Executor[Any] | None = None
        try:
            arguments = (
                get_argument_values(self.field_def, self.field_nodes[0], coerced)
                if self.field_def.args or self.field_nodes[0].arguments
                else {}
            )
            value = resolve(root_value, info, **arguments)
            if is_awaitable(value):
                value = await value
            if not self._present(value, info):
                completed = None
            elif self.leaf is not None:
                completed = Executor.complete_leaf_value(self.leaf, value)
            else:
                await self._check_type(value, info, is_awaitable)
                try:
                    completed = ObjectPlan(self.object_plan, is_awaitable).complete(
                        value
                    )
                except Unplanned:
                    # The plan gives up on this value: the executor completes
                    # it, collecting the errors of its fields as it would have.
                    executor = self._executor(
                        executor_class,
                        root_value,
                        context_value,
                        coerced,
                        middleware,
                        is_awaitable,
                        operation_extensions,
                    )
                    assert self.object_type is not None
                    completed = executor.collect_and_execute_subfields(
                        self.object_type, self.details, self.path, value, None
                    )
                    if is_awaitable(completed):
                        completed = await cast(Awaitable[Any], completed)
        except Exception as raw_error:
            errors = executor.collected_errors if executor else CollectedErrors()
            error = located_error(raw_error, self.field_nodes, self.path.as_list())
            if self.non_null:
                # Propagated to the whole response (the executor raises it from
                # the field and `execute_operation` collects it at the root).
                errors.add(error, None)
                return ExecutionResult(None, errors.errors)
            errors.add(error, self.path)
            return ExecutionResult({self.key: None}, errors.errors)
        field_errors = executor.collected_errors.errors if executor else None
        return ExecutionResult({self.key: completed}, field_errors or None)

    def _executor(
        self,
        executor_class: Any,  # Strawberry's (ours): it takes operation_extensions
        root_value: Any,
        context_value: Any,
        variable_values: VariableValues,
        middleware: MiddlewareManager | None,
        is_awaitable: Callable[[Any], bool],
        operation_extensions: dict[str, Any] | None,
    ) -> Executor[Any]:
        """The executor `Executor.build` would make for this request (its
        variables coerced already)."""
        executor: Executor[Any] = executor_class(
            self.schema,
            self.fragment_definitions,
            self.fragments,
            root_value,
            context_value,
            self.operation,
            variable_values,
            default_field_resolver,
            default_type_resolver,
            default_field_resolver,
            False,  # enable_early_execution
            middleware,
            is_awaitable,
            None,  # is_async_iterable
            hide_suggestions=False,
            abort_signal=None,
            hooks=None,
            operation_extensions=operation_extensions,
        )
        return executor

    def _present(self, value: Any, info: GraphQLResolveInfo[Any]) -> bool:
        """`complete_value`'s first steps: whether there is a value to
        complete (False: null), or the error the value is."""
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            if self.non_null:
                raise TypeError(
                    "Cannot return null for non-nullable field"
                    f" {info.parent_type}.{info.field_name}."
                )
            return False
        return True

    async def _check_type(
        self, value: Any, info: GraphQLResolveInfo[Any], is_awaitable: Any
    ) -> None:
        """`complete_object_value`'s check of the value's type, if it has one."""
        assert self.object_type is not None
        is_type_of = self.object_type.is_type_of
        if is_type_of is None:
            return
        checked = is_type_of(value, info)
        if is_awaitable(checked):
            checked = await cast(Awaitable[Any], checked)
        if not checked:
            raise invalid_return_type_error(self.object_type, value, self.details)


class _Request:
    """What Strawberry's `build_resolve_info` reads of an executor."""

    __slots__ = (
        "abort_signal",
        "async_helpers",
        "context_value",
        "fragment_definitions",
        "is_awaitable",
        "operation",
        "operation_extensions",
        "root_value",
        "schema",
        "variable_values",
    )

    def __init__(
        self,
        prepared: PreparedOperation,
        root_value: Any,
        context_value: Any,
        variable_values: VariableValues,
        is_awaitable: Callable[[Any], bool],
        operation_extensions: dict[str, Any] | None,
    ) -> None:
        self.schema = prepared.schema
        self.fragment_definitions = prepared.fragment_definitions
        self.operation = prepared.operation
        self.root_value = root_value
        self.context_value = context_value
        self.variable_values = variable_values
        self.is_awaitable = is_awaitable
        self.abort_signal = None  # Strawberry passes none
        self.async_helpers = _ASYNC_HELPERS
        self.operation_extensions = operation_extensions


# Background work a resolver hands over with `info.async_helpers.track`,
# settled as an executor settles it (kept here until done).
_BACKGROUND: set[asyncio.Future[Any]] = set()


def _gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
    return gather_with_cancel(*values)


def _track(values: Sequence[Any]) -> None:
    awaitables = [value for value in values if inspect.isawaitable(value)]
    if awaitables:
        future = asyncio.gather(*awaitables, return_exceptions=True)
        _BACKGROUND.add(future)
        future.add_done_callback(_BACKGROUND.discard)


_ASYNC_HELPERS = GraphQLResolveInfoHelpers(gather=_gather, track=_track)


# ---------------------------------------------------------------------------
# Preparing


# By the ids of the schema and of the document's node (a node's hash and
# equality are its whole structure's) and the operation name: the documents
# the parser's cache holds, each entry gone with its node. A plan is its
# schema's (its resolvers, its types): the schema is kept with it, so that
# its id names no other schema meanwhile. None: the operation does not qualify.
_PREPARED: dict[
    tuple[int, int, str | None],
    tuple[weakref.ref[DocumentNode], GraphQLSchema, PreparedOperation | None],
] = {}


def prepared(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> PreparedOperation | None:
    """The operation `operation_name` of `document` prepared, once per
    document; None if it does not qualify (see the module's docstring)."""
    key = (id(schema), id(document), operation_name)
    cached = _PREPARED.get(key)
    if cached is not None and cached[0]() is document:
        return cached[2]
    if operation_name is not None and _operation(document, operation_name) is None:
        # Not kept: names sent at random would grow this without bound.
        return None  # graphql-core reports the unknown operation
    try:
        operation = prepare(schema, document, operation_name)
    except Exception:
        # A bug in preparing must cost the shortcut, not the request.
        logger.exception("operation not prepared")
        operation = None

    def forget(_: object) -> None:
        _PREPARED.pop(key, None)

    _PREPARED[key] = (weakref.ref(document, forget), schema, operation)
    return operation


def prepare(
    schema: GraphQLSchema, document: DocumentNode, operation_name: str | None
) -> PreparedOperation | None:
    """The plan of a validated document's operation, or None if it does not
    qualify (graphql-core runs it then, and reports what is wrong with it)."""
    if schema.get_directive("defer") or schema.get_directive("stream"):
        return None  # graphql-core's `execute` refuses these itself
    if _has_directives(document):
        return None
    operation = _operation(document, operation_name)
    if operation is None or operation.operation is OperationType.SUBSCRIPTION:
        return None
    fragment_definitions: dict[str, FragmentDefinitionNode] = {}
    for definition in document.definitions:
        if isinstance(definition, FragmentDefinitionNode):
            if definition.variable_definitions:
                return None
            fragment_definitions[definition.name.value] = definition
    fragments = {name: FragmentDetails(d) for name, d in fragment_definitions.items()}
    root_type = schema.get_root_type(operation.operation)
    selections = operation.selection_set.selections
    if root_type is None or len(selections) != 1:
        return None
    (node,) = selections
    if not isinstance(node, FieldNode) or node.name.value.startswith("__"):
        return None
    field_def = root_type.fields.get(node.name.value)
    if field_def is None:
        return None
    key = node.alias.value if node.alias else node.name.value
    details = [FieldDetails(node, None)]
    return_type = field_def.type
    non_null = isinstance(return_type, GraphQLNonNull)
    named = (
        return_type.of_type if isinstance(return_type, GraphQLNonNull) else return_type
    )
    leaf: GraphQLScalarType | GraphQLEnumType | None = None
    object_plan = None
    if isinstance(named, GraphQLScalarType | GraphQLEnumType):
        leaf = named
    elif isinstance(named, GraphQLObjectType):
        planner = _Planner(schema, fragments, operation)
        object_plan = plan_object(planner, named, details)  # type: ignore[arg-type]
        if object_plan is None:
            return None
    else:
        return None  # a list, an interface or a union
    return PreparedOperation(
        schema=schema,
        operation=operation,
        fragment_definitions=fragment_definitions,
        fragments=fragments,
        root_type=root_type,
        key=key,
        field_def=field_def,
        details=details,
        field_nodes=[node],
        path=Path(None, key, root_type.name),
        non_null=non_null,
        leaf=leaf,
        object_type=None if leaf else named,
        object_plan=object_plan,
    )


def _operation(
    document: DocumentNode, operation_name: str | None
) -> OperationDefinitionNode | None:
    """The operation graphql-core's Executor.build picks, or None where it
    reports an error instead."""
    operation: OperationDefinitionNode | None = None
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            if operation_name is None:
                if operation is not None:
                    return None  # "Must provide operation name …"
                operation = definition
            elif definition.name and definition.name.value == operation_name:
                operation = definition
    return operation


class _DirectiveFinder(Visitor):
    found = False

    def enter_directive(self, *_: Any) -> Any:
        self.found = True
        return self.BREAK


def _has_directives(node: Node) -> bool:
    """Whether any directive is used anywhere in the document: each may read
    variables (@include, @skip) or change how the operation runs."""
    finder = _DirectiveFinder()
    visit(node, finder)
    return finder.found


class _Planner:
    """What events.py's planner reads of an executor, for a selection that
    no variable changes (no directive in the document)."""

    __slots__ = ("fragments", "hide_suggestions", "operation", "schema")

    middleware_manager = None  # none: Strawberry's is empty (checked per request)
    variable_values = VariableValues({}, {})  # read only by directives

    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDetails],
        operation: OperationDefinitionNode,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.operation = operation
        self.hide_suggestions = False  # Strawberry asks for none


def execute(
    schema: GraphQLSchema,
    document: DocumentNode,
    root_value: Any = None,
    context_value: Any = None,
    variable_values: dict[str, Any] | None = None,
    operation_name: str | None = None,
    **options: Any,
) -> AwaitableOrValue[ExecutionResult]:
    """graphql-core's `execute`, through the operation's plan when it has one
    and the request asks for nothing the plan does not do (the options
    Strawberry passes: its empty middleware, its awaitable check, our
    executor class, the operation's extensions)."""
    middleware = options.get("middleware")
    is_awaitable = options.get("is_awaitable")
    executor_class = options.get("executor_class")
    if (
        options.keys() <= _OPTIONS
        and is_awaitable is not None
        and executor_class is not None
        and (middleware is None or _empty(middleware))
        and (operation := prepared(schema, document, operation_name)) is not None
    ):
        return operation.execute(
            root_value=root_value,
            context_value=context_value,
            variable_values=variable_values,
            is_awaitable=is_awaitable,
            executor_class=executor_class,
            middleware=middleware,
            operation_extensions=options.get("operation_extensions"),
        )
    return graphql_execute(
        schema,
        document,
        root_value,
        context_value,
        variable_values,
        operation_name,
        **options,
    )


_OPTIONS = frozenset(
    {"middleware", "is_awaitable", "executor_class", "operation_extensions"}
)


def _empty(middleware: object) -> bool:
    return isinstance(middleware, MiddlewareManager) and not middleware.middlewares
