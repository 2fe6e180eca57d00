"""`python -m eval`: run the sets, print one table (Markdown)."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from eval import scoring, sets
from eval.runner import NaiveBaseline, OurAPI, model_server
from gptmini_graphql.settings import Settings

TASKS = ("sentiment", "translation", "summarization")


def run(
    *,
    model_path: Path,
    model_name: str,
    threads: int = 1,
    limit: int | None = None,
    tasks: tuple[str, ...] = TASKS,
) -> list[scoring.Row]:
    """Every chosen set, through our API and the naive baseline, in one run."""
    rows: list[scoring.Row] = []
    with model_server(model_path, model_name, threads) as url:
        naive = NaiveBaseline(url)
        try:
            with OurAPI(url, model_name) as ours:
                if "sentiment" in tasks:
                    items = sets.spread(sets.sentiment(), limit)
                    rows += scoring.sentiment(items, ours, naive)
                if "translation" in tasks:
                    items = sets.spread(sets.translation(), limit)
                    rows += scoring.translation(items, ours, naive)
                if "summarization" in tasks:
                    items = sets.spread(sets.summarization(), limit)
                    rows += scoring.summarization(items, ours, naive)
        finally:
            naive.close()
    return rows


def table(rows: list[scoring.Row]) -> str:
    def cell(value: float | None, percent: bool) -> str:
        if value is None:
            return "—"
        return f"{value:.0%}" if percent else f"{value:.2f}"

    lines = [
        "| task | metric | ours | naive baseline | target |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.task} | {r.metric} | {cell(r.ours, r.percent)} | "
        f"{cell(r.baseline, r.percent)} | {r.target} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    defaults = Settings(_env_file=None)
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__)
    parser.add_argument("--model-path", type=Path, default=defaults.local_model_path)
    parser.add_argument("--model-name", default=defaults.local_model_name)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--limit", type=int, help="at most this many items of each set")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    rows = run(
        model_path=args.model_path,
        model_name=args.model_name,
        threads=args.threads,
        limit=args.limit,
        tasks=tuple(args.tasks),
    )
    print(
        f"\nModel: {args.model_name} ({args.model_path}), {args.threads} thread(s), "
        f"{time.monotonic() - started:.0f} s\n"
    )
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
