"""The evaluation harness (`make eval`): its sets have the shape the issue
asks for, and one item of each runs through the whole pipeline, the real
model in a child process. No quality is asserted here: `make eval` measures."""

from __future__ import annotations

from collections import Counter

import pytest

from eval import metrics, sets
from eval.__main__ import run, table
from tests.model_process import MODEL_FILE


def test_the_sets_are_large_and_balanced_enough() -> None:
    labels = Counter(item.label for item in sets.sentiment())
    assert min(labels["positive"], labels["negative"], labels["neutral"]) >= 30
    assert labels["positive"] == labels["negative"] == labels["neutral"]
    assert 0 < labels["mixed"] <= 10
    pairs = sets.translation()
    assert len(pairs) >= 40
    assert len({pair.target for pair in pairs}) >= 5
    assert len({pair.source for pair in pairs}) >= 4
    texts = sets.summarization()
    assert len(texts) >= 20
    assert len({text.language for text in texts}) >= 3


def test_loops_sentence_ends_and_unsupported_names_are_recognised() -> None:
    assert metrics.has_loop(
        "que está en la ciudad que está en la ciudad que está en la ciudad"
    )
    assert not metrics.has_loop("Bonjour, comment allez-vous aujourd'hui ?")
    assert metrics.ends_a_sentence("It rained.") and not metrics.ends_a_sentence("It")
    source = "Anna Berg opened the library in 2027."
    assert metrics.unsupported("In 2027 Anna Berg opened it.", source) == []
    assert metrics.unsupported("In 2025 Tom Smith opened it.", source) == [
        "2025",
        "Tom",
        "Smith",
    ]
    assert metrics.language_of("Das Wetter ist heute sehr schön.") == "de"


@pytest.mark.skipif(not MODEL_FILE.is_file(), reason="no model file")
def test_one_item_of_each_set_runs_through_the_api_and_the_baseline() -> None:
    rows = run(model_path=MODEL_FILE, model_name="smollm2-135m-instruct", limit=1)
    assert {row.task for row in rows} == {"sentiment", "translation", "summarization"}
    by_metric = {row.metric: row for row in rows}
    # A broken pipeline answers with errors; these say it did not.
    assert by_metric["valid label"].ours == 1
    assert by_metric["answered (no error)"].ours == 1
    assert all(row.baseline is not None for row in rows if "seconds" in row.metric)
    assert table(rows).startswith("| task | metric | ours | naive baseline |")
