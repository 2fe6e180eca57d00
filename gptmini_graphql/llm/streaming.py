"""A streamed answer read as it comes: text deltas, then one `ChatStreamEnd`
with the upstream's own usage; a stream that breaks, stalls or ends early
says so, and its upstream's "stream" circuit hears of it at the end.

The LLM facade (client.py) meters the events; the call that opens the
stream is calls.py's.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from gptmini_graphql.errors import UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gptmini_graphql.llm.answers import ChatStreamEnd, FinishReason
from gptmini_graphql.llm.calls import UpstreamCalls
from gptmini_graphql.llm.malformed import token_counts
from gptmini_graphql.llm.resilience import is_outage
from gptmini_graphql.llm.sse import EventStream
from gptmini_graphql.llm.upstream_errors import APIError, APITimeoutError
from gptmini_graphql.read_deadline import ReadDeadline

MALFORMED_CHUNK = "The model's stream sent a malformed chunk."
EMPTY_ANSWER = "The model returned an empty answer."


async def upstream_events(
    calls: UpstreamCalls, body: dict[str, Any]
) -> AsyncGenerator[str | ChatStreamEnd | tuple[str, str], None]:
    """LLM.stream_chat's events, first of all (model, upstream name)."""
    stream, upstream = await calls.call(body, stream=True)
    assert isinstance(stream, EventStream)  # stream=True
    yield upstream.model, upstream.name
    # The stream's circuit hears how the stream ended, not that it began:
    # most streams that break do so after their HTTP 200.
    breaker = upstream.breakers["stream"]
    # No overall deadline for a stream: each wait for the next chunk is bounded.
    wait = calls.settings.llm_timeout_seconds
    model, finish_reason, usage = upstream.model, None, None
    wrote = False
    reading = calls.metrics.streaming(upstream.name)
    deadline = ReadDeadline(wait)
    try:
        async with stream:
            chunks = aiter(stream)
            while True:
                deadline.since = deadline.loop.time()
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except ValueError as exc:  # an event that is not JSON
                    raise UpstreamError(MALFORMED_CHUNK) from exc
                except asyncio.CancelledError:
                    if deadline.expired():
                        raise TimeoutError from None
                    raise
                finally:
                    deadline.since = None
                # Raw dicts: building the openai SDK's typed chunk for every
                # token was a quarter of a stream's CPU.
                if not isinstance(chunk, dict):
                    raise UpstreamError(MALFORMED_CHUNK)
                try:
                    model = chunk.get("model") or model
                    usage = chunk.get("usage") or usage
                    choice = (chunk.get("choices") or [{}])[0]
                    finish_reason = choice.get("finish_reason") or finish_reason
                    text = (choice.get("delta") or {}).get("content")
                except (AttributeError, IndexError, TypeError) as exc:
                    raise UpstreamError(MALFORMED_CHUNK) from exc
                if text:
                    wrote = True
                    yield text
    except (TimeoutError, APITimeoutError) as exc:
        breaker.failed()
        raise UpstreamTimeout(
            f"The model stopped answering for {wait:g} seconds."
        ) from exc
    except APIError as exc:
        # A dropped connection, or an error event: an outage of this
        # stream (the server answered it, so only streams are paused).
        if is_outage(exc):
            breaker.failed()
        else:
            breaker.released()  # an error event that blames the request
        raise upstream.describe_error(exc) from exc
    except UpstreamError:
        breaker.failed()  # a malformed stream: its fault
        raise
    except BaseException:
        breaker.released()  # the caller left: says nothing of the upstream
        raise
    finally:
        deadline.stop()
        reading.dec()
    try:
        if finish_reason is None:
            raise UpstreamUnavailable("The model's stream ended before its answer did.")
        if not wrote:
            raise UpstreamError(EMPTY_ANSWER)
        if usage is not None and token_counts(usage) is None:
            raise UpstreamError(MALFORMED_CHUNK)
        end = ChatStreamEnd(
            finish_reason=FinishReason.of(finish_reason),
            model=model,
            usage=calls.priced(model, usage) if usage is not None else None,
        )
    except UpstreamError:
        breaker.failed()
        raise
    breaker.succeeded()
    yield end
