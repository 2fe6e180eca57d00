"""Each set through our API and through the naive baseline, scored alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eval import metrics
from eval.runner import Answer, NaiveBaseline, OurAPI
from eval.sets import SentimentItem, SummaryItem, TranslationItem
from gptmini_graphql.settings import Settings
from gptmini_graphql.tasks.translate import translation_tokens


@dataclass(frozen=True)
class Row:
    task: str
    metric: str
    ours: float | None
    baseline: float | None
    target: str = ""
    percent: bool = True  # a share, printed as a percentage


def _seconds(answers: list[Answer]) -> float | None:
    return sum(a.seconds for a in answers) / len(answers) if answers else None


def _progress(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        print(
            f"\r{label}: {done}/{total}", end="\n" if done == total else "", flush=True
        )

    return show


def sentiment(
    items: list[SentimentItem], ours: OurAPI, naive: NaiveBaseline
) -> list[Row]:
    show = _progress("sentiment")
    mine, theirs = [], []
    for i, item in enumerate(items):
        mine.append(ours.analyze(item.text))
        theirs.append(naive.analyze(item.text))
        show(i + 1, len(items))
    truth = [item.label for item in items]
    ours_labels = [
        (a.data["analyze"]["sentiment"].lower() if not a.error else None) for a in mine
    ]
    naive_labels = [_naive_label(a) for a in theirs]
    ours_right = [t == p for t, p in zip(truth, ours_labels, strict=True)]
    naive_right = [t == p for t, p in zip(truth, naive_labels, strict=True)]
    scored = [(item, a) for item, a in zip(items, mine, strict=True) if not a.error]
    # A model server without logprobs gives no confidence to calibrate.
    rated = [(i, a) for i, a in scored if a.data["analyze"]["confidence"] is not None]
    confidences = [a.data["analyze"]["confidence"] for _, a in rated]
    right = [item.label == a.data["analyze"]["sentiment"].lower() for item, a in rated]
    polar = [(i, a) for i, a in scored if i.label in ("positive", "negative")]
    not_mixed = [
        (t, p) for t, p in zip(truth, ours_labels, strict=True) if t != "mixed"
    ]
    naive_not_mixed = [
        (t, p) for t, p in zip(truth, naive_labels, strict=True) if t != "mixed"
    ]
    return [
        Row(
            "sentiment",
            "accuracy",
            metrics.share(ours_right),
            metrics.share(naive_right),
            "≥ baseline + 15 pts",
        ),
        Row(
            "sentiment",
            "macro-F1",
            metrics.macro_f1(truth, ours_labels),
            metrics.macro_f1(truth, naive_labels),
            percent=False,
        ),
        Row(
            "sentiment",
            "valid label",
            metrics.share([p is not None for p in ours_labels]),
            metrics.share([p is not None for p in naive_labels]),
            "100%",
        ),
        Row(
            "sentiment",
            "MIXED on a text that is not mixed",
            metrics.share([p == "mixed" for _, p in not_mixed]),
            metrics.share([p == "mixed" for _, p in naive_not_mixed]),
            "0%",
        ),
        Row(
            "sentiment",
            "Brier score of confidence (lower is better)",
            metrics.brier(confidences, right),
            None,
            "< 0.25",
            percent=False,
        ),
        Row(
            "sentiment",
            "score's sign agrees (positive/negative texts)",
            metrics.share(
                [
                    metrics.sign_agrees(i.label, a.data["analyze"]["score"])
                    for i, a in polar
                ]
            ),
            None,
        ),
        Row(
            "sentiment",
            "seconds per answer",
            _seconds(mine),
            _seconds(theirs),
            percent=False,
        ),
    ]


def _naive_label(answer: Answer) -> str | None:
    import json

    if answer.error:
        return None
    try:
        label = json.loads(answer.data["text"]).get("sentiment")
    except (ValueError, AttributeError):
        return None
    return label if label in metrics.LABELS else None


def translation_cap(text: str, target: str) -> int:
    """The token cap translate gives itself: the baseline gets the same."""
    ceiling = Settings(_env_file=None).max_completion_tokens
    return translation_tokens(text, target, ceiling)


def translation(
    items: list[TranslationItem], ours: OurAPI, naive: NaiveBaseline
) -> list[Row]:
    import json

    show = _progress("translation")
    mine, theirs, detected = [], [], []
    for i, item in enumerate(items):
        mine.append(ours.translate(item.text, item.target))
        theirs.append(
            naive.translate(
                item.text, item.target, translation_cap(item.text, item.target)
            )
        )
        detected.append(naive.detect(item.text))
        show(i + 1, len(items))
    ours_texts = [a.data["translate"]["text"] if not a.error else "" for a in mine]
    naive_texts = [a.data["text"] if not a.error else "" for a in theirs]

    def in_target(texts: list[str]) -> list[bool]:
        return [
            metrics.language_of(t) == i.target
            for t, i in zip(texts, items, strict=True)
        ]

    ours_stopped = [
        not a.error
        and a.data["translate"]["usage"]["completionTokens"]
        < translation_cap(i.text, i.target)
        for a, i in zip(mine, items, strict=True)
    ]
    naive_stopped = [not a.error and a.data["finish_reason"] == "stop" for a in theirs]
    ours_source = [
        not a.error and a.data["translate"]["sourceLanguage"] == i.source
        for a, i in zip(mine, items, strict=True)
    ]
    naive_source = []
    for a, i in zip(detected, items, strict=True):
        try:
            naive_source.append(json.loads(a.data["text"])["language"] == i.source)
        except (KeyError, ValueError, TypeError):
            naive_source.append(False)
    return [
        Row(
            "translation",
            "in the target language (lingua)",
            metrics.share(in_target(ours_texts)),
            metrics.share(in_target(naive_texts)),
            "≥ 90%",
        ),
        Row(
            "translation",
            "repetition loop",
            metrics.share([metrics.has_loop(t) for t in ours_texts]),
            metrics.share([metrics.has_loop(t) for t in naive_texts]),
            "≤ 5%",
        ),
        Row(
            "translation",
            "stopped before the token cap",
            metrics.share(ours_stopped),
            metrics.share(naive_stopped),
        ),
        Row(
            "translation",
            "source language detected right",
            metrics.share(ours_source),
            metrics.share(naive_source),
        ),
        Row(
            "translation",
            "answered (no error)",
            metrics.share([not a.error for a in mine]),
            metrics.share([not a.error for a in theirs]),
        ),
        Row(
            "translation",
            "seconds per answer (ours: with detection)",
            _seconds(mine),
            _seconds(
                [
                    Answer(a.seconds + d.seconds)
                    for a, d in zip(theirs, detected, strict=True)
                ]
            ),
            percent=False,
        ),
    ]


def summary_cap(max_words: int) -> int:
    """The token cap summarize gives itself (tasks/summarize.py)."""
    return max_words * 3 + 16


def summarization(
    items: list[SummaryItem], ours: OurAPI, naive: NaiveBaseline
) -> list[Row]:
    show = _progress("summarization")
    mine, theirs = [], []
    for i, item in enumerate(items):
        mine.append(ours.summarize(item.text, item.max_words))
        theirs.append(
            naive.summarize(item.text, item.max_words, summary_cap(item.max_words))
        )
        show(i + 1, len(items))
    ours_texts = [a.data["summarize"]["text"] if not a.error else "" for a in mine]
    naive_texts = [a.data["text"] if not a.error else "" for a in theirs]

    def judged(texts: list[str]) -> dict[str, list[bool]]:
        pairs = list(zip(texts, items, strict=True))
        return {
            "within": [
                bool(t.strip())
                and metrics.word_count(t) <= i.max_words
                and not t.rstrip().endswith("…")
                for t, i in pairs
            ],
            "sentence": [metrics.ends_a_sentence(t) for t, _ in pairs],
            "shorter": [
                0 < metrics.word_count(t) < metrics.word_count(i.text) for t, i in pairs
            ],
            "language": [metrics.language_of(t) == i.language for t, i in pairs],
            "faithful": [
                bool(t.strip()) and not metrics.unsupported(t, i.text, i.language)
                for t, i in pairs
            ],
        }

    o, n = judged(ours_texts), judged(naive_texts)
    return [
        Row(
            "summarization",
            "within maxWords, not cut",
            metrics.share(o["within"]),
            metrics.share(n["within"]),
        ),
        Row(
            "summarization",
            "ends at a sentence boundary",
            metrics.share(o["sentence"]),
            metrics.share(n["sentence"]),
            "≥ 90% (cut ≤ 10%)",
        ),
        Row(
            "summarization",
            "shorter than the input",
            metrics.share(o["shorter"]),
            metrics.share(n["shorter"]),
        ),
        Row(
            "summarization",
            "in the input's language",
            metrics.share(o["language"]),
            metrics.share(n["language"]),
        ),
        Row(
            "summarization",
            "no number or name absent from the input",
            metrics.share(o["faithful"]),
            metrics.share(n["faithful"]),
        ),
        Row(
            "summarization",
            "seconds per answer",
            _seconds(mine),
            _seconds(theirs),
            percent=False,
        ),
    ]
