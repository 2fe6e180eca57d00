"""summarize: a summary of at most `max_words` words, in the text's language."""

from __future__ import annotations

from gptmini_graphql.llm.client import CallerLLM
from gptmini_graphql.tasks.base import (
    delimited,
    require_range,
    require_text,
    without_envelope,
)
from gptmini_graphql.tasks.results import Summary, answer_fields

DEFAULT_MAX_WORDS = 100
MAX_WORDS = 1000

SYSTEM = (
    "You write summaries. Summarize the text the user gives between <text> tags "
    "in at most {max_words} words, in the same language as the text. Reply with "
    "the summary only: no title, no preamble, no quotes."
)


async def summarize(
    llm: CallerLLM, text: str, max_words: int = DEFAULT_MAX_WORDS
) -> Summary:
    require_text(text, "text", llm.settings.max_input_chars)
    require_range(max_words, "maxWords", 1, MAX_WORDS)
    answer = await llm.chat(
        [
            {"role": "system", "content": SYSTEM.format(max_words=max_words)},
            {"role": "user", "content": delimited(text)},
        ],
        # Words run to about 1.3 tokens in English, more elsewhere: room for 3.
        max_tokens=min(max_words * 3 + 16, llm.settings.max_completion_tokens),
        temperature=0,
    )
    return Summary(
        text=within_words(without_envelope(answer.text), max_words),
        **answer_fields(answer),
    )


def within_words(summary: str, max_words: int) -> str:
    """Small models overrun word limits; the limit is a promise to the caller."""
    words = summary.split()
    if len(words) <= max_words:
        return summary
    return " ".join(words[:max_words]).rstrip(",;:") + "…"
