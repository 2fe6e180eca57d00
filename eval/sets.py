"""The labelled sets: JSON Lines files in eval/data/, written by us."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).parent / "data"


@dataclass(frozen=True)
class SentimentItem:
    text: str
    label: str  # positive, negative, neutral or mixed


@dataclass(frozen=True)
class TranslationItem:
    text: str
    source: str  # ISO 639-1
    target: str


@dataclass(frozen=True)
class SummaryItem:
    text: str
    language: str
    max_words: int


def _rows(name: str) -> list[dict]:
    with (DATA / name).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def sentiment() -> list[SentimentItem]:
    return [SentimentItem(**row) for row in _rows("sentiment.jsonl")]


def translation() -> list[TranslationItem]:
    return [TranslationItem(**row) for row in _rows("translation.jsonl")]


def summarization() -> list[SummaryItem]:
    return [SummaryItem(**row) for row in _rows("summarization.jsonl")]


def spread(items: list, limit: int | None) -> list:
    """At most `limit` items, taken evenly across the set (so across labels)."""
    if limit is None or limit >= len(items):
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]
