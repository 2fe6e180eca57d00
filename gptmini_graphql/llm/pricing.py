"""Cost in USD of one LLM answer, from the pricing table in settings."""

from __future__ import annotations

from collections.abc import Mapping

from gptmini_graphql.settings import ModelPrice

PER_TOKENS = 1_000_000


def find_price(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of `model`, matching dated snapshots by their longest known prefix.

    OpenAI answers with the snapshot it used (gpt-4o-mini-2024-07-18) while
    the table is keyed by the alias (gpt-4o-mini).
    """
    if model in prices:
        return prices[model]
    known = [name for name in prices if model.startswith(name + "-")]
    return prices[max(known, key=len)] if known else None


def cost_usd(
    price: ModelPrice | None,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
) -> float | None:
    """None when the model has no price: an unknown cost is not a zero cost."""
    if price is None:
        return None
    cached_rate = price.input if price.cached_input is None else price.cached_input
    uncached = max(prompt_tokens - cached_tokens, 0)
    total = (
        uncached * price.input
        + cached_tokens * cached_rate
        + completion_tokens * price.output
    )
    return round(total / PER_TOKENS, 10)
