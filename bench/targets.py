"""Issue 17's targets, each read off this run's rows against the baseline or
floor measured in the same run: the block `python -m bench` prints last.

Where a scenario ran several rounds, each figure is the median of its rounds.
A target whose scenario did not run (or was skipped) says so.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.capacity import MEMORY_REQUESTS, SLOW_CONCURRENCY, SLOW_UPSTREAM_MS

Rows = list[dict]


def _median(rows: Rows, scenario: str, variant: str, key: str, level: int | None):
    values = [
        row[key]
        for row in rows
        if row["scenario"] == scenario
        and row.get("variant", "") == variant
        and (level is None or row.get("concurrency") == level)
        and row.get(key) is not None
    ]
    return statistics.median(values) if values else None


@dataclass(frozen=True)
class Target:
    name: str
    unit: str
    # Where each figure comes from: (scenario, variant, row key, concurrency).
    ours: tuple[str, str, str, int | None]
    reference: tuple[str, str, str, int | None]
    reference_name: str
    goal: str
    # (ours, reference) -> met; and the ratio shown (ours / reference unless
    # the goal is a multiple of the reference's figure).
    met: Callable[[float, float], bool]
    ratio: Callable[[float, float], float] = lambda ours, ref: ours / ref
    # What the goal is judged on, when neither figure nor the ratio shows it.
    detail: Callable[[float, float], str] | None = None


def _targets(level: int, stream_level: int, sent: int) -> list[Target]:
    miss = ("summarize", "miss", "server_cpu_ms_per_req", level)
    baseline = ("baseline", "", "server_cpu_ms_per_req", level)
    cpu = "server_cpu_ms_per_req"
    return [
        Target(
            f"1 miss CPU/req @c{level}",
            "ms",
            miss,
            baseline,
            "Starlette+SDK",
            "<= 1.2 ms and ratio < 1",
            lambda ours, ref: ours <= 1.2 and ours < ref,
        ),
        Target(
            f"2 hit CPU/req @c{level}",
            "ms",
            ("summarize", "hit", cpu, level),
            ("floor", "", cpu, level),
            "Starlette floor",
            "<= 0.3 ms",
            lambda ours, ref: ours <= 0.3,
        ),
        Target(
            f"3 stream CPU/stream @c{stream_level}",
            "ms",
            ("stream", "ours", cpu, stream_level),
            ("stream", "baseline", cpu, stream_level),
            "Starlette+SDK stream",
            "<= 2 ms",
            lambda ours, ref: ours <= 2.0,
        ),
        Target(
            "3 stream TTFT p50 @c1",
            "ms",
            ("stream", "ours", "ttft_p50_ms", 1),
            ("stream", "direct", "ttft_p50_ms", 1),
            "upstream direct",
            "<= upstream + 1 ms",
            lambda ours, ref: ours - ref <= 1.0,
            detail=lambda ours, ref: f"{ours - ref:+.2f} ms",
        ),
        Target(
            f"4 req/s, {SLOW_UPSTREAM_MS} ms upstream @c{SLOW_CONCURRENCY}",
            "req/s",
            # Not "rps": the direct calls move in step, and a window counts
            # their whole bursts (load.py).
            (
                "slow-upstream",
                f"ours {SLOW_UPSTREAM_MS}ms",
                "closed_loop_rps",
                SLOW_CONCURRENCY,
            ),
            (
                "slow-upstream",
                f"direct {SLOW_UPSTREAM_MS}ms",
                "closed_loop_rps",
                SLOW_CONCURRENCY,
            ),
            "upstream direct",
            "ratio >= 0.95",
            lambda ours, ref: ours / ref >= 0.95,
        ),
        Target(
            f"5 RSS after {sent:,} reqs",
            "MB",
            ("memory", "ours", "rss_after_mb", None),
            ("memory", "baseline", "rss_after_mb", None),
            "Starlette+SDK",
            "<= 100 MB",
            lambda ours, ref: ours <= 100,
        ),
        Target(
            "6 req/s vs LiteLLM @c64",
            "req/s",
            ("litellm", "ours", "rps", None),
            ("litellm", "litellm", "rps", None),
            "LiteLLM proxy",
            "ours/its >= 8",
            lambda ours, ref: ours / ref >= 8,
        ),
        Target(
            "6 CPU/req vs LiteLLM @c64",
            "ms",
            ("litellm", "ours", cpu, None),
            ("litellm", "litellm", cpu, None),
            "LiteLLM proxy",
            "its/ours >= 8",
            lambda ours, ref: ref / ours >= 8,
            ratio=lambda ours, ref: ref / ours,
            detail=lambda ours, ref: f"ours {ref / ours:.1f}x lighter",
        ),
    ]


def evaluate(rows: Rows) -> list[dict]:
    """Each target: measured, reference, ratio, met (None: not measured)."""
    levels = {r["concurrency"] for r in rows if r["scenario"] == "summarize"}
    level = 64 if 64 in levels or not levels else max(levels)
    stream_levels = {r["concurrency"] for r in rows if r["scenario"] == "stream"}
    stream_level = max(stream_levels) if stream_levels else 16
    sent = next(
        (r["sent"] for r in rows if r["scenario"] == "memory" and "sent" in r),
        MEMORY_REQUESTS,
    )
    results = []
    for target in _targets(level, stream_level, sent):
        ours = _median(rows, *target.ours)
        reference = _median(rows, *target.reference)
        result = {
            "target": target.name,
            "unit": target.unit,
            "measured": ours,
            "reference": reference,
            "reference_name": target.reference_name,
            "goal": target.goal,
            "ratio": None,
            "met": None,
        }
        if ours is not None and reference:
            result["ratio"] = round(target.ratio(ours, reference), 3)
            result["met"] = target.met(ours, reference)
            if target.detail:
                result["detail"] = target.detail(ours, reference)
        else:
            missing = target.ours if ours is None else target.reference
            result["note"] = _why_missing(rows, missing[0])
        results.append(result)
    return results


def _why_missing(rows: Rows, scenario: str) -> str:
    notes = [r["note"] for r in rows if r["scenario"] == scenario and r.get("note")]
    return notes[0] if notes else f"{scenario} not run (--only {scenario})"


def block(results: list[dict], load: str) -> str:
    """The compact table, headed by how busy the machine was."""
    cells = [["target", "measured", "reference", "ratio", "goal", "result"]]
    for r in results:
        if r["met"] is None:
            cells.append([r["target"], "-", "-", "-", r["goal"], r.get("note", "")])
            continue
        places = 3 if r["unit"] == "ms" else 0
        outcome = "met" if r["met"] else "missed"
        cells.append(
            [
                r["target"],
                f"{r['measured']:.{places}f} {r['unit']}",
                f"{r['reference']:.{places}f} ({r['reference_name']})",
                f"{r['ratio']:.2f}",
                r["goal"],
                f"{outcome} ({r['detail']})" if r.get("detail") else outcome,
            ]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(5)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(line[:5], widths, strict=True))
        + "  "
        + line[5]
        for line in cells
    ]
    lines.insert(1, "-" * len(lines[0]))
    met = sum(1 for r in results if r["met"])
    measured = sum(1 for r in results if r["met"] is not None)
    return "\n".join([f"issue 17 targets ({met}/{measured} met; {load}):", *lines])
