"""One request on its way through the worker thread: what the worker and
the awaiting coroutine share (`Job`), and the coroutine's side of it
(`Generation`): text pieces as they come, then how it finished."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from gptmini_graphql.llm.answers import FinishReason, TokenLogprob, TokenUsage
from gptmini_graphql.llm.local.chat import ChatRequest


@dataclass(frozen=True)
class Started:
    prompt_tokens: int


@dataclass(frozen=True)
class Finished:
    finish_reason: FinishReason
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None


@dataclass
class Job:
    """What the worker thread and the awaiting coroutine share."""

    request: ChatRequest
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[str | Started | Finished | BaseException] = field(
        default_factory=asyncio.Queue
    )
    cancelled: threading.Event = field(default_factory=threading.Event)

    def post(self, event: str | Started | Finished | BaseException) -> None:
        """Hand an event to the awaiting coroutine (called on the worker)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            self.cancelled.set()


class Generation:
    """A running completion: iterate it for text pieces, then read the outcome."""

    def __init__(self, job: Job, prompt_tokens: int) -> None:
        self._job = job
        self.prompt_tokens = prompt_tokens
        self.finish_reason: FinishReason | None = None
        self.completion_tokens = 0
        self.logprobs: tuple[TokenLogprob, ...] | None = None

    @property
    def usage(self) -> TokenUsage:
        # No cost: the engine knows no prices (the API prices what it reads).
        return TokenUsage(self.prompt_tokens, self.completion_tokens, 0, None)

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> str:
        if self.finish_reason is not None:
            raise StopAsyncIteration
        event = await self._job.events.get()
        if isinstance(event, str):
            return event
        if isinstance(event, Finished):
            self.finish_reason = event.finish_reason
            self.completion_tokens = event.completion_tokens
            self.logprobs = event.logprobs
            raise StopAsyncIteration
        assert isinstance(event, BaseException)
        raise event
