"""What the harness measures: plain functions of answers and labels."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

LABELS = ("positive", "negative", "neutral", "mixed")


def share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def macro_f1(truth: Sequence[str], predicted: Sequence[str | None]) -> float:
    """Mean F1 over the labels that occur in `truth`."""
    scores = []
    for label in sorted(set(truth)):
        tp = sum(
            t == label and p == label for t, p in zip(truth, predicted, strict=True)
        )
        fp = sum(
            t != label and p == label for t, p in zip(truth, predicted, strict=True)
        )
        fn = sum(
            t == label and p != label for t, p in zip(truth, predicted, strict=True)
        )
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def brier(confidences: Sequence[float], correct: Sequence[bool]) -> float | None:
    """Mean squared gap between the stated confidence and being right: 0 is
    perfect, 0.25 is what a constant 0.5 earns."""
    if not confidences:
        return None
    pairs = zip(confidences, correct, strict=True)
    return sum((c - float(r)) ** 2 for c, r in pairs) / len(confidences)


def sign_agrees(label: str, score: float) -> bool:
    """For positive and negative texts: the score leans the label's way."""
    return score > 0 if label == "positive" else score < 0


_WORD = re.compile(r"\w+", re.UNICODE)


def has_loop(text: str, *, n_max: int = 8, repeats: int = 3) -> bool:
    """A run of the same word n-gram (n ≤ n_max) at least `repeats` times in a
    row, or one 4-word phrase three times anywhere: how small models loop."""
    words = [w.lower() for w in _WORD.findall(text)]
    for n in range(1, n_max + 1):
        for start in range(len(words) - n * repeats + 1):
            gram = words[start : start + n]
            if all(
                words[start + k * n : start + (k + 1) * n] == gram
                for k in range(1, repeats)
            ):
                return True
    phrases: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - 3):
        key = tuple(words[i : i + 4])
        phrases[key] = phrases.get(key, 0) + 1
        if phrases[key] >= 3:
            return True
    return False


@cache
def _detector():
    from lingua import LanguageDetectorBuilder

    return LanguageDetectorBuilder.from_all_languages().build()


def language_of(text: str) -> str | None:
    """ISO 639-1 code that lingua identifies, lower case; None if unsure."""
    language = _detector().detect_language_of(text)
    return language.iso_code_639_1.name.lower() if language else None


_SENTENCE_END = re.compile(r"[.!?\u3002\uff01\uff1f][\"'\u00bb\u201d)\]]*$")


def ends_a_sentence(text: str) -> bool:
    return bool(_SENTENCE_END.search(text.strip()))


def word_count(text: str) -> int:
    return len(text.split())


_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def unsupported(summary: str, source: str, language: str = "en") -> list[str]:
    """Numbers, and capitalised words inside a sentence (names), that the
    summary has and the source does not: a cheap check of faithfulness.
    (German capitalises every noun, so there only numbers count.)"""
    found = [n for n in _NUMBER.findall(summary) if n not in source]
    if language == "de":
        return found
    lowered = source.lower()
    for sentence in re.split(r"(?<=[.!?])\s+", summary.strip()):
        for raw in sentence.split()[1:]:
            word = raw.strip(".,;:!?\"'()«»“”")
            if word[:1].isupper() and word.lower() not in lowered:
                found.append(word)
    return found
