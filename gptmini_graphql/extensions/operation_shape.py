"""What an operation asks for: its root fields and its depth, counted through
fragments. Each fragment is measured once, so a document that spreads
fragments into fragments cannot make the count itself expensive.

The walks are plain functions handed their memo, not closures that call
themselves: such a closure is a reference cycle, left to the garbage
collector on every call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    SelectionSetNode,
)

Fragments = Callable[[str], FragmentDefinitionNode | None]
Measure = TypeVar("Measure")


def root_field_counts(
    selection_set: SelectionSetNode, fragments: Fragments
) -> Counter[str]:
    """How many times each root field is asked for (five aliased `summarize`
    fields are five)."""
    return _count(selection_set, fragments, {})


def _count(
    selections: SelectionSetNode,
    fragments: Fragments,
    memo: dict[str, Counter[str]],
) -> Counter[str]:
    total: Counter[str] = Counter()
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            total[selection.name.value] += 1
        elif isinstance(selection, InlineFragmentNode):
            total += _count(selection.selection_set, fragments, memo)
        elif isinstance(selection, FragmentSpreadNode):
            spread: Counter[str] = _through(
                selection, fragments, memo, _count, Counter()
            )
            total += spread
    return total


def depth(selection_set: SelectionSetNode, fragments: Fragments) -> int:
    """Levels of nested fields; introspection (`__schema`, `__type`) is not
    counted, so GraphiQL's own schema query never hits the limit."""
    return _depth(selection_set, fragments, {})


def _depth(
    selections: SelectionSetNode, fragments: Fragments, memo: dict[str, int]
) -> int:
    deepest = 0
    for selection in selections.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value.startswith("__"):
                continue
            below = (
                _depth(selection.selection_set, fragments, memo)
                if selection.selection_set
                else 0
            )
            deepest = max(deepest, 1 + below)
        elif isinstance(selection, InlineFragmentNode):
            deepest = max(deepest, _depth(selection.selection_set, fragments, memo))
        elif isinstance(selection, FragmentSpreadNode):
            deepest = max(deepest, _through(selection, fragments, memo, _depth, 0))
    return deepest


def _through(
    spread: FragmentSpreadNode,
    fragments: Fragments,
    memo: dict[str, Measure],
    measure: Callable[[SelectionSetNode, Fragments, dict[str, Measure]], Measure],
    empty: Measure,
) -> Measure:
    """A fragment's measure, computed once; a cycle (which validation refuses
    anyway) counts as empty instead of recursing forever."""
    name = spread.name.value
    if name not in memo:
        memo[name] = empty  # in progress: a spread back into it adds nothing
        fragment = fragments(name)
        memo[name] = (
            measure(fragment.selection_set, fragments, memo) if fragment else empty
        )
    return memo[name]
