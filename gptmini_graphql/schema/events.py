"""A subscription's events, each read through a plan made once per subscription.

graphql-core runs every event of a subscription as an operation of its own,
on a copy of the subscription's executor: the root fields collected again,
the root field's arguments coerced again, and each field of the event's
type resolved and completed through the whole executor. For a stream of
text deltas that was a third of the server's CPU per stream, and the answer
only depends on the event: the selection, the variables and the schema
are fixed when the subscription starts.

So when the selection is made only of what the executor would read and
complete without running any code of ours (Strawberry's plain fields, with
no resolver, arguments or field extension; scalars and enums; objects of a
concrete type; `__typename`), `plan` turns it once into a tree of
(response key, attribute, completion). `EventPlan.data` reads an event
through it, completing each leaf with graphql-core's own
`complete_leaf_value` (but a str for a String, or a bool for a Boolean,
which that returns as is). It gives up on an event (`Unplanned`) wherever
the executor would have raised or done more: a null for a non-null field,
an error or an awaitable as a value, a value its scalar refuses. Such an
event is run by the executor instead, so its errors are exactly graphql-core's.

A subscription's plan is made once for its document, not for every stream:
the parser's cache hands each request the same nodes (extensions/parsing.py),
and the plan is kept with its operation's node, gone when the node is. A
selection that variables could change (a directive, which may read one;
fragment arguments) is planned for its own stream only.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLField,
    GraphQLID,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLString,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
)
from graphql.execution import Executor
from graphql.execution.collect_fields import (
    FieldDetailsList,
    GroupedFieldSet,
    collect_fields,
    collect_subfields,
)
from graphql.language import FieldNode, FragmentSpreadNode, InlineFragmentNode
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

TYPENAME = "__typename"
# Values that can be neither an error nor an awaitable: most of an event's.
_BUILTIN_SCALARS = frozenset({str, int, float, bool})
# graphql-core's scalars that complete a value of exactly this Python type
# as the value itself (serialize_string, serialize_id, serialize_boolean).
_ITSELF = {GraphQLString: str, GraphQLID: str, GraphQLBoolean: bool}


class Unplanned(Exception):
    """This event needs the executor (which will also report its error)."""


@dataclass(frozen=True, slots=True)
class _Field:
    key: str  # the response key: the field's alias, or its name
    read: Callable[[Any], Any] | None  # the value from its parent; None: __typename
    type_name: str  # the parent's type name, for __typename
    non_null: bool
    leaf: GraphQLScalarType | GraphQLEnumType | None
    fields: tuple[_Field, ...]  # an object's own, when not a leaf
    # A leaf's value of this exact type is its own completion (a str for a
    # String); an object's of this exact type (the Strawberry type's class)
    # is neither an error nor an awaitable, so is not checked for either.
    known: type | None = None


class EventPlan:
    """The subscription's one root field, planned for its events."""

    def __init__(self, root: _Field, is_awaitable: Callable[[Any], bool]) -> None:
        self.root = root
        self.is_awaitable = is_awaitable

    def data(self, event: Any) -> dict[str, Any]:
        """The event's `data`, as the executor would complete it; raises
        `Unplanned` where the executor would have more to do."""
        return {self.root.key: self._complete(self.root, event)}

    def _complete(self, field: _Field, value: Any) -> Any:
        if value is None or value is Undefined:
            if field.non_null:
                raise Unplanned
            return None
        kind = type(value)
        if kind is field.known and field.leaf is not None:
            return value
        if (
            kind is not field.known
            and kind not in _BUILTIN_SCALARS
            and (isinstance(value, Exception) or self.is_awaitable(value))
        ):
            raise Unplanned
        if field.leaf is not None:
            try:
                return Executor.complete_leaf_value(field.leaf, value)
            except Exception as error:  # the executor raises it, located
                raise Unplanned from error
        completed: dict[str, Any] = {}
        for child in field.fields:
            if child.read is None:
                completed[child.key] = child.type_name
                continue
            try:
                child_value = child.read(value)
            except Exception as error:
                raise Unplanned from error
            # _complete's two commonest answers, without the call (most of
            # an event's fields): a leaf of its own type (a str for a
            # String), and a null where null is allowed.
            if child.leaf is not None and type(child_value) is child.known:
                completed[child.key] = child_value
            elif child_value is None and not child.non_null:
                completed[child.key] = None
            else:
                completed[child.key] = self._complete(child, child_value)
        return completed


def plan(executor: Executor[Any]) -> EventPlan | None:
    """The plan of `executor`'s subscription, or None if its events need the
    executor (a resolver, arguments, a list, an abstract type, middleware)."""
    manager = executor.middleware_manager
    if manager is not None and manager.middlewares:
        return None  # an extension resolves each field itself
    operation = executor.operation
    if not fixed([operation.selection_set], executor.fragments):
        root = _root_plan(executor)
    else:
        key = id(operation)
        kept = _PLANS.get(key)
        if kept is not None and kept[0]() is operation and kept[1]() is executor.schema:
            root = kept[2]
        else:
            root = _root_plan(executor)

            def forget(_: object) -> None:
                _PLANS.pop(key, None)

            # "No plan" is kept as a plan is: not tried again for every stream.
            _PLANS[key] = (
                weakref.ref(operation, forget),
                weakref.ref(executor.schema),
                root,
            )
    return None if root is None else EventPlan(root, executor.is_awaitable)


# Plans of subscriptions by the id of their operation's node (a node's own
# hash and equality are its structure's), with the node and the schema they
# were made for: one per subscription document the parser's cache holds.
# Both held weakly: a Strawberry schema's GraphQL schema refers back to it,
# and through its extensions to the parser's cache that holds the node.
_PLANS: dict[
    int,
    tuple[weakref.ref[OperationDefinitionNode], weakref.ref[Any], _Field | None],
] = {}


def fixed(
    selection_sets: Iterable[SelectionSetNode], fragments: dict[str, Any]
) -> bool:
    """Whether these selections are the same whatever the variables: no
    directive in them (an @include or @skip may read one), nor fragment
    arguments, through their fragments too."""
    seen: set[str] = set()
    pending = list(selection_sets)
    while pending:
        for selection in pending.pop().selections:
            if selection.directives:
                return False
            if isinstance(selection, FieldNode | InlineFragmentNode):
                if selection.selection_set:
                    pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                if selection.arguments:
                    return False
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is None or fragment.definition.directives:
                    return False
                if name not in seen:
                    seen.add(name)
                    pending.append(fragment.definition.selection_set)
    return True


def _root_plan(executor: Executor[Any]) -> _Field | None:
    """The tree of the subscription's one root field, or None."""
    root_type = executor.schema.subscription_type
    if root_type is None:
        return None
    collected = collect_fields(
        executor.schema,
        executor.fragments,
        executor.variable_values,
        root_type,
        executor.operation,
        executor.hide_suggestions,
    )
    roots = _plain(collected)
    if roots is None or len(roots) != 1:
        return None
    ((key, details),) = roots.items()
    field_def = executor.schema.get_field(root_type, details[0].node.name.value)
    definition = _strawberry_field(field_def)
    if field_def is None or definition is None or not definition.is_subscription:
        return None
    # Strawberry resolves a subscription's root field on each event to the
    # event itself, whatever its arguments.
    return _planned(executor, key, field_def.type, details, root_type, None)


def _planned(
    executor: Executor[Any],
    key: str,
    type_: GraphQLOutputType,
    details: FieldDetailsList,
    parent: GraphQLObjectType,
    read: Callable[[Any], Any] | None,
    *,
    type_checked: bool = False,  # the value's is_type_of has passed already
) -> _Field | None:
    non_null = isinstance(type_, GraphQLNonNull)
    named = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    if isinstance(named, GraphQLScalarType | GraphQLEnumType):
        itself = _ITSELF.get(named) if isinstance(named, GraphQLScalarType) else None
        return _Field(key, read, parent.name, non_null, named, (), itself)
    if not isinstance(named, GraphQLObjectType) or (
        named.is_type_of is not None and not type_checked
    ):
        return None  # a list, an interface or union, or a type that checks values
    collected = collect_subfields(
        executor.schema,
        executor.fragments,
        executor.variable_values,
        executor.operation,
        named,
        details,
        executor.hide_suggestions,
    )
    grouped = _plain(collected)
    if grouped is None:
        return None
    fields = []
    for child_key, child_details in grouped.items():
        node = child_details[0].node
        name = node.name.value
        if name == TYPENAME:
            fields.append(_Field(child_key, None, named.name, True, None, ()))
            continue
        child_def = named.fields.get(name)
        child_read = _plain_read(child_def)
        if child_def is None or child_read is None or node.arguments:
            return None
        child = _planned(
            executor, child_key, child_def.type, child_details, named, child_read
        )
        if child is None:
            return None
        fields.append(child)
    return _Field(
        key, read, parent.name, non_null, None, tuple(fields), _plain_class(named)
    )


def _plain_class(object_type: GraphQLObjectType) -> type | None:
    """The class of the Strawberry type behind `object_type`, unless its
    instances could be errors or awaitables (or it has none). The checks
    ask the instance (`isinstance` its `__class__`, `hasattr` its
    `__await__`): a class whose instances answer either otherwise than it
    does (a `__getattr__`, its own `__getattribute__` or `__class__`) is
    left to them."""
    definition = (object_type.extensions or {}).get(
        GraphQLCoreConverter.DEFINITION_BACKREF
    )
    origin = getattr(definition, "origin", None)
    if not isinstance(origin, type) or issubclass(origin, BaseException):
        return None
    if (
        hasattr(origin, "__await__")
        or hasattr(origin, "__getattr__")
        or origin.__getattribute__ is not object.__getattribute__
        or any("__class__" in vars(base) for base in origin.__mro__[:-1])
    ):
        return None
    return origin


def _plain(collected: Any) -> GroupedFieldSet | None:
    """The grouped fields, unless @defer or fragment arguments are in play."""
    grouped: GroupedFieldSet = collected.grouped_field_set
    if collected.new_defer_usages or collected.forbidden_directive_instances:
        return None
    for details in grouped.values():
        for detail in details:
            if detail.defer_usage is not None or detail.fragment_variable_values:
                return None
    return grouped


def _plain_read(field_def: GraphQLField | None) -> Callable[[Any], Any] | None:
    """How Strawberry's resolver of a plain field reads it from its parent
    (StrawberryField.get_result without a resolver), or None for any other."""
    definition = _strawberry_field(field_def)
    if field_def is None or definition is None or field_def.args:
        return None
    if not definition.is_basic_field or not getattr(
        field_def.resolve, "_is_default", False
    ):
        return None
    resolve, name = definition.default_resolver, definition.python_name
    if resolve is getattr:  # Strawberry's default: the attribute, read in C
        return attrgetter(name)
    return lambda source: resolve(source, name)


def _strawberry_field(field_def: GraphQLField | None) -> StrawberryField | None:
    if field_def is None or not field_def.extensions:
        return None
    definition = field_def.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    return definition if isinstance(definition, StrawberryField) else None


class ObjectPlan(EventPlan):
    """A selection on an object of one type (a query's answer, say), planned
    as an event is: `complete` is the object as graphql-core's
    `collect_and_execute_subfields` would complete it, or `Unplanned`."""

    def complete(self, value: Any) -> dict[str, Any]:
        completed: dict[str, Any] = self._complete(self.root, value)
        return completed


def plan_object(
    executor: Executor[Any], object_type: GraphQLObjectType, details: FieldDetailsList
) -> _Field | None:
    """The plan of the selection `details` make on an `object_type` (for
    `ObjectPlan`), or None if it needs the executor."""
    manager = executor.middleware_manager
    if manager is not None and manager.middlewares:
        return None  # an extension resolves each field itself
    # Its value's type was checked before its selection is completed
    # (graphql-core's complete_object_value).
    return _planned(
        executor, "", object_type, details, object_type, None, type_checked=True
    )
