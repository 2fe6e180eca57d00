"""What the scenarios send: one summarize request, and the chat completion our
server makes of it (built from the task's own prompt, so the two stay equal);
the same for `complete` and its stream."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gptmini_graphql.settings import Settings
from gptmini_graphql.tasks import complete
from gptmini_graphql.tasks.base import delimited
from gptmini_graphql.tasks.summarize import DEFAULT_MAX_WORDS, SYSTEM

MODEL = Settings.model_fields["openai_model"].default
_MAX_COMPLETION_TOKENS = Settings.model_fields["max_completion_tokens"].default
# The default model file, as `make run` fetches it into the checkout.
LOCAL_MODEL_PATH = (
    Path(__file__).resolve().parent.parent
    / Settings.model_fields["local_model_path"].default
)
LOCAL_CONTEXT_SIZE = Settings.model_fields["local_context_size"].default

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


# A prompt a small model does not finish early: every run writes max_tokens.
STORY = (
    "Write a long, detailed story about a lighthouse keeper who finds a message "
    "in a bottle. Use many chapters."
)
COMPLETE_MAX_TOKENS = 128

COMPLETE_QUERY = (
    "query Complete($prompt: String!, $maxTokens: Int!) "
    "{ complete(prompt: $prompt, maxTokens: $maxTokens, temperature: 0) "
    "{ text finishReason model usage { promptTokens completionTokens } } }"
)

STREAM_QUERY = (
    "subscription Stream($prompt: String!) "
    "{ completeStream(prompt: $prompt, maxTokens: 64) "
    "{ text done finishReason model usage { completionTokens costUsd } } }"
)

ANALYZE_QUERY = (
    "query Analyze($text: String!) "
    "{ analyze(text: $text) { sentiment score confidence model } }"
)
REVIEW = "The soup was cold, but the staff were kind and the bread was wonderful."
REVIEW_AGAIN = "Two hours late, no apology, and the seats were broken. Never again."


def complete_messages(prompt: str, max_tokens: int) -> list[dict[str, str]]:
    """The messages our complete task sends, by its own construction."""
    limits = Settings.model_construct()  # the defaults, without reading .env
    llm = SimpleNamespace(settings=limits)
    return complete._messages(llm, prompt, max_tokens, 0.0, None)


def stream_chat_arguments(prompt: str) -> dict[str, Any]:
    """What our server gives `chat.completions.create` for
    `completeStream(prompt, maxTokens: 64)`."""
    return {
        "messages": complete_messages(prompt, 64),
        "max_tokens": 64,
        "temperature": complete.DEFAULT_TEMPERATURE,
        "stream": True,
        "stream_options": {"include_usage": True},
        "model": MODEL,
    }


def stream_chat_body(prompt: str) -> bytes:
    """The body our server sends upstream for `completeStream(prompt, maxTokens: 64)`."""
    return json.dumps(stream_chat_arguments(prompt)).encode()


# Where the baseline app (bench/baseline_app.py) puts the caller's text.
BASELINE_PLACEHOLDER = "\u0000text\u0000"


def baseline_templates() -> str:
    """Our tasks' chat arguments, with a placeholder for the text, as JSON for
    the baseline app (which must not import our package to make them)."""
    return json.dumps(
        {
            "summarize": chat_arguments(BASELINE_PLACEHOLDER),
            "stream": stream_chat_arguments(BASELINE_PLACEHOLDER),
        }
    )
