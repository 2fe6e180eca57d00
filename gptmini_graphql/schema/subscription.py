"""Streaming: a completion's text as the model writes it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing

import strawberry
from strawberry.types import Info

from gptmini_graphql.context import RequestContext
from gptmini_graphql.operation_log import StreamLog
from gptmini_graphql.schema.llm_fields import llm_subscription
from gptmini_graphql.tasks import complete
from gptmini_graphql.tasks.results import CompletionChunk


@strawberry.type
class Subscription:
    @llm_subscription(
        description="`complete`, streamed: text deltas, then one last event with "
        "the finish reason, model and usage. Unsubscribing stops the model."
    )
    async def complete_stream(
        self,
        info: Info[RequestContext, None],
        prompt: str,
        max_tokens: int = complete.DEFAULT_MAX_TOKENS,
        temperature: float = complete.DEFAULT_TEMPERATURE,
        system: str | None = None,
    ) -> AsyncGenerator[CompletionChunk, None]:
        context = info.context
        context.streaming = True
        # A refused stream (no token, bad arguments) gets its log line too.
        async with StreamLog(context, "completeStream") as log:
            llm = context.authorized_llm(info.field_name)
            events = complete.complete_stream(
                llm, prompt, max_tokens, temperature, system
            )
            # Closed here, not when the garbage collector gets to it: a client
            # that leaves while a chunk is in flight closes this generator at
            # its `yield`, and only this closes the upstream response at once.
            # The guard ends it when shutdown's grace runs out.
            guarded = context.services.drain.guard(events)
            async with aclosing(events), aclosing(guarded):
                async for event in guarded:
                    if isinstance(event, str):
                        log.delta()
                        yield CompletionChunk(text=event, done=False)
                    else:
                        log.end = event
                        yield CompletionChunk.last(event)
