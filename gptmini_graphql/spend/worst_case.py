"""The most a model call can cost, known before it is made: what a budget
reserves (spend/meter.py), so a call cannot overspend whatever it answers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from gptmini_graphql.settings import ModelPrice

# Tokens a chat message costs beyond its text (role, separators), generously.
MESSAGE_OVERHEAD = 8
# Structured output asks with instructions or a schema we do not see here.
STRUCTURED_OVERHEAD = 256


def prompt_bound(body: Mapping[str, Any]) -> int:
    """At most how many prompt tokens `body` can cost: a token holds at least
    one byte of UTF-8 in every tokenizer we know, so bytes bound tokens."""
    tokens = 3
    for message in body["messages"]:
        tokens += len(str(message.get("content", "")).encode()) + MESSAGE_OVERHEAD
    if "response_format" in body:
        tokens += len(json.dumps(body["response_format"]).encode())
        tokens += STRUCTURED_OVERHEAD
    return tokens


def worst_case(body: Mapping[str, Any], price: ModelPrice | None) -> tuple[int, int]:
    """(nano-dollars, tokens) a call with `body` can cost at most."""
    prompt, completion = prompt_bound(body), int(body["max_tokens"])
    return worst_cost(prompt, completion, price), prompt + completion


def worst_cost(prompt: int, completion: int, price: ModelPrice | None) -> int:
    """Nano-dollars, rounded up (prices are per million tokens)."""
    if price is None:
        return 0
    nano = (prompt * price.input + completion * price.output) * 1000
    return -int(-nano // 1)
