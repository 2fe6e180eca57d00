"""summarize: a summary of at most `max_words` words, in the text's language."""

from __future__ import annotations

import re

from gptmini_graphql.llm.caller import CallerLLM
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
    "Summarize the text the user gives between <text> tags in at most "
    "{max_words} words, in the language of the text, as complete sentences. "
    "Reply with the summary only: no title, no preamble, no quotes."
)

# The end of a sentence: its mark, any closing quotes or brackets, then space.
_SENTENCE_END = re.compile(
    r"[.!?\u3002\uff01\uff1f][\"'\u00bb\u201d\u2019)\]]*(?=\s|$)"
)


# A break between clauses: a comma (not one inside a number), a semicolon or
# a colon, or their full-width forms.
_CLAUSE_BREAK = re.compile(r"[,;:](?=\s)|[\uff0c\uff1b\uff1a]")


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
    """The summary's whole sentences that fit in `max_words`.

    Small models overrun word limits and token caps; the limit is a promise
    to the caller, and a sentence cut in half reads worse than one left out.
    When not even the first sentence fits, it ends at its last clause break
    (a comma, semicolon or colon) within the limit, with a full stop; only
    with no break there is it cut, with an ellipsis.
    """
    summary = " ".join(summary.split())
    words = summary.split(" ")
    if len(words) <= max_words and _ends_a_sentence(summary):
        return summary
    head = " ".join(words[:max_words])
    ends = [m.end() for m in _SENTENCE_END.finditer(head)]
    if ends:
        return head[: ends[-1]]
    if len(words) <= max_words:
        return summary  # one unfinished sentence within the limit: keep it
    # A clause break too early would leave a fragment ("Yes."): not before a
    # third of the limit.
    breaks = [
        m
        for m in _CLAUSE_BREAK.finditer(head)
        if m.start() >= _offset(head, max_words // 3)
    ]
    if breaks:
        last = breaks[-1]
        full_width = last.group() in "\uff0c\uff1b\uff1a"
        return head[: last.start()] + ("\u3002" if full_width else ".")
    return head.rstrip(",;:") + "…"


def _offset(text: str, words: int) -> int:
    """Where the `words`-th word of `text` ends."""
    return len(" ".join(text.split(" ")[:words]))


def _ends_a_sentence(text: str) -> bool:
    return any(m.end() == len(text) for m in _SENTENCE_END.finditer(text))
