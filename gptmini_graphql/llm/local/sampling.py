"""Per-token helpers of a generation: log probabilities as OpenAI reports
them, and stop strings that may span tokens."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from gptmini_graphql.llm.answers import TokenLogprob


class LogitsRecorder:
    """Sees each step's raw logits (first in the sampler chain, so before
    penalties and grammar) and keeps them for the token chosen from them."""

    def __init__(self) -> None:
        self._logits: np.ndarray | None = None

    def __call__(self, input_ids: np.ndarray, logits: np.ndarray) -> np.ndarray:
        self._logits = np.array(logits, dtype=np.float64)
        return logits

    def entry(self, token: int, top: int, piece: Callable[[int], str]) -> TokenLogprob:
        assert self._logits is not None
        logits = self._logits
        shifted = logits - logits.max()
        log_probs = shifted - math.log(float(np.exp(shifted).sum()))
        best = np.argpartition(-log_probs, top)[:top] if top else np.array([], int)
        ranked = sorted(best.tolist(), key=lambda t: -log_probs[t])
        return (
            piece(token),
            float(log_probs[token]),
            [(piece(t), float(log_probs[t])) for t in ranked],
        )


def kept(
    logprobs: list[TokenLogprob], recorder: LogitsRecorder | None
) -> tuple[TokenLogprob, ...] | None:
    return tuple(logprobs) if recorder is not None else None


def as_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else stop


def split_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str, bool]:
    """Split `text` into (send now, hold back, a stop string was found).

    Text is held back while its end could still grow into a stop string.
    """
    cuts = [i for stop in stops if stop and (i := text.find(stop)) != -1]
    if cuts:
        return text[: min(cuts)], "", True
    hold = max(
        (
            n
            for stop in stops
            for n in range(len(stop) - 1, 0, -1)
            if text.endswith(stop[:n])
        ),
        default=0,
    )
    return text[: len(text) - hold], text[len(text) - hold :], False
