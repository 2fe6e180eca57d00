"""complete: free continuation of a prompt, with an optional system message."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from gptmini_graphql.llm.answers import ChatStreamEnd
from gptmini_graphql.llm.caller import CallerLLM
from gptmini_graphql.tasks.base import require_range, require_text
from gptmini_graphql.tasks.results import Completion, answer_fields

DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.7
MAX_TEMPERATURE = 2.0


async def complete(
    llm: CallerLLM,
    prompt: str,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    system: str | None = None,
) -> Completion:
    messages = _messages(llm, prompt, max_tokens, temperature, system)
    answer = await llm.chat(messages, max_tokens=max_tokens, temperature=temperature)
    return Completion(
        text=answer.text,
        finish_reason=answer.finish_reason,
        **answer_fields(answer),
    )


def complete_stream(
    llm: CallerLLM,
    prompt: str,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    system: str | None = None,
) -> AsyncGenerator[str | ChatStreamEnd, None]:
    """The same completion as text deltas; arguments are checked before it starts."""
    messages = _messages(llm, prompt, max_tokens, temperature, system)
    return llm.stream_chat(messages, max_tokens=max_tokens, temperature=temperature)


def _messages(
    llm: CallerLLM, prompt: str, max_tokens: int, temperature: float, system: str | None
) -> list[dict[str, str]]:
    limits = llm.settings
    require_text(prompt, "prompt", limits.max_input_chars)
    require_range(max_tokens, "maxTokens", 1, limits.max_completion_tokens)
    require_range(temperature, "temperature", 0, MAX_TEMPERATURE)
    messages = []
    if system is not None:
        # The caller's own system message: theirs to write, so not delimited.
        require_text(system, "system", limits.max_input_chars)
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    return messages
