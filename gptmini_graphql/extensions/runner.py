"""Strawberry's extension runner, without its cost on every operation.

For each stage of an operation (operation, parse, validate, execute, each
streamed result), Strawberry's runner inspects every extension's hook anew,
wraps it in a context manager made for the occasion (functools.wraps and
all) and enters it through an exit stack: 40 us an operation for our one
extension, 5% of a cache hit. This one wraps an extension class's hooks
once, the first time the class is seen, and enters a stage's only hook
directly. What runs, and in which order, is Strawberry's: hooks entered in
the extensions' order and left in reverse, exceptions never swallowed by
the runner, a stage with several hooks through an exit stack.

Hooks that are plain functions rather than generators are rare; a stage
with one is left to Strawberry's own runner.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types.execution import StreamExecutionResult

# (is_async, a factory of the hook's context manager from the extension and
# the hook's arguments), or None when the class does not define the hook.
Hook = tuple[bool, Callable[..., Any]] | None


class HookRunner(SchemaExtensionsRunner):
    def operation(self) -> Any:
        return self._stage("on_operation") or super().operation()

    def parsing(self) -> Any:
        return self._stage("on_parse") or super().parsing()

    def validation(self) -> Any:
        return self._stage("on_validate") or super().validation()

    def executing(self) -> Any:
        return self._stage("on_execute") or super().executing()

    def on_stream_result(self, result: StreamExecutionResult) -> Any:
        return self._stage("on_stream_result", result) or super().on_stream_result(
            result
        )

    def _stage(self, name: str, *args: Any) -> _Stage | None:
        """The stage's hooks, or None if one is not a generator."""
        hooks = []
        for extension in self.extensions:
            hook = _hook(type(extension), name)
            if hook is _NOT_A_GENERATOR:
                return None
            if hook is not None:
                is_async, factory = hook
                hooks.append((is_async, factory(extension, *args), extension))
        return _Stage(name, hooks)


_NOT_A_GENERATOR: Hook = (False, lambda *_: None)


# Extension classes are few and live as long as the process.
_HOOKS: dict[tuple[type[SchemaExtension], str], Hook] = {}


def _hook(extension_class: type[SchemaExtension], name: str) -> Hook:
    key = (extension_class, name)
    if key not in _HOOKS:
        _HOOKS[key] = _wrapped(extension_class, name)
    return _HOOKS[key]


def _wrapped(extension_class: type[SchemaExtension], name: str) -> Hook:
    function = getattr(extension_class, name)
    if function is getattr(SchemaExtension, name):
        return None
    if inspect.isasyncgenfunction(function):
        return True, contextlib.asynccontextmanager(function)
    if inspect.isgeneratorfunction(function):
        return False, contextlib.contextmanager(function)
    return _NOT_A_GENERATOR


class _Stage:
    """Strawberry's context manager of a stage, for hooks already wrapped."""

    __slots__ = ("_hooks", "_name", "_stack")

    def __init__(
        self, name: str, hooks: list[tuple[bool, Any, SchemaExtension]]
    ) -> None:
        self._name = name
        self._hooks = hooks
        self._stack: Any = None

    async def __aenter__(self) -> None:
        if len(self._hooks) == 1:
            is_async, manager, _ = self._hooks[0]
            await manager.__aenter__() if is_async else manager.__enter__()
            return
        self._stack = contextlib.AsyncExitStack()
        await self._stack.__aenter__()
        for is_async, manager, _ in self._hooks:
            if is_async:
                await self._stack.enter_async_context(manager)
            else:
                self._stack.enter_context(manager)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # Returns None as Strawberry's does: a hook cannot swallow an error.
        if self._stack is not None:
            await self._stack.__aexit__(kind, error, traceback)
            return
        if self._hooks:
            is_async, manager, _ = self._hooks[0]
            if is_async:
                await manager.__aexit__(kind, error, traceback)
            else:
                manager.__exit__(kind, error, traceback)

    def __enter__(self) -> None:
        self._stack = contextlib.ExitStack()
        self._stack.__enter__()
        for is_async, manager, extension in self._hooks:
            if is_async:
                raise RuntimeError(
                    f"SchemaExtension hook {extension}.{self._name} "
                    "failed to complete synchronously."
                )
            self._stack.enter_context(manager)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stack.__exit__(kind, error, traceback)
