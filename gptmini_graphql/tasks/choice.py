"""How sure the model was of a label it chose: from the log probabilities of
the token where the label begins, the share of each label.

The label is one JSON string value; its first token decides it (each of our
labels starts differently), so the alternatives the model weighed at that
token say how likely each label was. No generated digits: a small model's
"confidence": 0.9 is the same on every answer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from gptmini_graphql.llm.answers import TokenLogprob


def label_shares(
    text: str, key: str, labels: Sequence[str], logprobs: list[TokenLogprob] | None
) -> dict[str, float] | None:
    """Each label's share of the probability at the token that began the
    value of `key` in the JSON `text`; None if the logprobs do not tell."""
    if not logprobs:
        return None
    found = re.search(rf'"{re.escape(key)}"\s*:\s*"', text)
    if found is None:
        return None
    offset, start = found.end(), 0
    for token, logprob, top in logprobs:
        end = start + len(token)
        if end > offset:
            # The token may carry the opening quote (or more) before the label.
            lead = max(0, offset - start)
            shares = _shares([(token, logprob), *top], lead, labels)
            return shares if shares else None
        start = end
    return None


def _shares(
    candidates: list[tuple[str, float]], lead: int, labels: Sequence[str]
) -> dict[str, float]:
    mass = dict.fromkeys(labels, 0.0)
    seen = set()
    for token, logprob in candidates:
        if token in seen:
            continue
        seen.add(token)
        piece = token[lead:].strip().lower() if lead < len(token) else ""
        piece = piece.lstrip('"').strip()
        matches = [label for label in labels if piece and label.startswith(piece)]
        if len(matches) == 1:  # "ne" could be negative or neutral: no evidence
            mass[matches[0]] += math.exp(logprob)
    total = sum(mass.values())
    return {label: p / total for label, p in mass.items()} if total > 0 else {}
