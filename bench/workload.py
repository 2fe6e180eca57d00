"""What the scenarios send: one summarize request, and the chat completion our
server makes of it (built from the task's own prompt, so the two stay equal)."""

from __future__ import annotations

import json
from typing import Any

from gptmini_graphql.settings import Settings
from gptmini_graphql.tasks.base import delimited
from gptmini_graphql.tasks.summarize import DEFAULT_MAX_WORDS, SYSTEM

MODEL = Settings.model_fields["openai_model"].default
_MAX_COMPLETION_TOKENS = Settings.model_fields["max_completion_tokens"].default

TEXT = (
    "At Tuesday's meeting the city council's transport committee approved the "
    "revised transit plan after three hours of debate. The plan adds six night "
    "bus routes from next spring, extends the eastern tram line by four stops "
    "to the new hospital, and replaces the oldest diesel buses with electric "
    "ones over five years. It is funded mainly by a parking levy of fifty cents "
    "an hour in the city centre, which shop owners opposed, arguing that it "
    "would keep customers away; the committee answered that footfall rose in "
    "every city that did the same. A public consultation on the tram stops "
    "opens next month, and the full council votes on the budget in June."
)

SUMMARIZE_QUERY = (
    "query Summarize($text: String!) "
    "{ summarize(text: $text) { text model usage { totalTokens costUsd } } }"
)

LOGIN_QUERY = (
    "mutation Login($username: String!, $password: String!) "
    "{ login(username: $username, password: $password) { accessToken } }"
)


def graphql_body(query: str, variables: dict[str, Any]) -> bytes:
    return json.dumps({"query": query, "variables": variables}).encode()


def chat_arguments(text: str) -> dict[str, Any]:
    """The arguments our summarize task gives `chat.completions.create`."""
    return {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM.format(max_words=DEFAULT_MAX_WORDS)},
            {"role": "user", "content": delimited(text)},
        ],
        "max_tokens": min(DEFAULT_MAX_WORDS * 3 + 16, _MAX_COMPLETION_TOKENS),
        "temperature": 0,
    }


def chat_body(text: str) -> bytes:
    """The JSON body the openai SDK sends for those arguments."""
    return json.dumps(chat_arguments(text)).encode()
