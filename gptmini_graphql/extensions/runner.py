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

A stage whose hooks are all plain generators (parse, validate, each
streamed result) is entered and left without a coroutine of its own: its
`__aenter__` and `__aexit__` do their work when called and return an
awaitable that is already done. A stream's every event passes one.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable, Generator
from functools import partial
from types import TracebackType
from typing import Any

from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.types import ExecutionContext
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

    async def get_extensions_results(self, ctx: ExecutionContext) -> dict[str, Any]:
        """Strawberry's, without a coroutine (await_maybe) for each
        extension's results: asked for every event of a stream."""
        data: dict[str, Any] = {}
        for extension in self.extensions:
            results = extension.get_results()
            # A dict (ours) is never awaitable: not asked of inspect, whose
            # check goes through the Awaitable ABC.
            if not isinstance(results, dict) and inspect.isawaitable(results):
                results = await results
            data.update(results)
        data.update(ctx.extensions_results)
        return data

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
        return False, partial(_GeneratorHook.of, function)
    return _NOT_A_GENERATOR


class _GeneratorHook(contextlib._GeneratorContextManager[Any]):
    """What `contextlib.contextmanager(function)(*args)` makes, for less:
    only the generator is kept (contextlib also keeps the function, its
    arguments and its docstring, to be a decorator too, and deletes them
    again on entering). Left exactly as contextlib leaves it: its `__exit__`
    is contextlib's own, which reads the generator alone."""

    def __init__(self, generator: Generator[Any, None, None]) -> None:
        self.gen = generator

    @classmethod
    def of(cls, function: Callable[..., Any], *args: Any) -> _GeneratorHook:
        return cls(function(*args))

    def __enter__(self) -> Any:
        try:
            return next(self.gen)
        except StopIteration:
            raise RuntimeError("generator didn't yield") from None


class _Done:
    """An awaitable that is done when awaited, with None."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]  # an iterator is all await needs


_DONE = _Done()


class _Stage:
    """Strawberry's context manager of a stage, for hooks already wrapped."""

    __slots__ = ("_hooks", "_name", "_stack", "_sync")

    def __init__(
        self, name: str, hooks: list[tuple[bool, Any, SchemaExtension]]
    ) -> None:
        self._name = name
        self._hooks = hooks
        self._stack: Any = None
        self._sync = not any(is_async for is_async, _, _ in hooks)

    def __aenter__(self) -> Awaitable[None]:
        if not self._sync:
            return self._aenter()
        if len(self._hooks) == 1:
            self._hooks[0][1].__enter__()
        elif self._hooks:
            self.__enter__()
        return _DONE

    def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> Awaitable[None]:
        if not self._sync:
            return self._aexit(kind, error, traceback)
        # Returns None as Strawberry's does: a hook cannot swallow an error.
        if self._stack is not None:
            self._stack.__exit__(kind, error, traceback)
        elif self._hooks:
            self._hooks[0][1].__exit__(kind, error, traceback)
        return _DONE

    async def _aenter(self) -> None:
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

    async def _aexit(
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
