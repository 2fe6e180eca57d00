"""`python -m bench [--quick] [--only NAME ...]`: start the servers, run the
scenarios, print a table, ratios, and issue 17's targets (bench/targets.py)
last; write bench/results/latest.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

from bench import targets
from bench.registry import Options
from bench.rig import Rig
from bench.scenarios import SCENARIOS
from bench.servers import ServerFailed

RESULTS = Path(__file__).resolve().parent / "results"

COLUMNS = [  # (heading, row key, format)
    ("scenario", "scenario", "{}"),
    ("variant", "variant", "{}"),
    ("round", "round", "{}"),
    ("conc", "concurrency", "{}"),
    ("reqs", "requests", "{}"),
    ("fail", "failures", "{}"),
    ("req/s", "rps", "{:.0f}"),
    ("loop req/s", "closed_loop_rps", "{:.0f}"),
    ("p50 ms", "p50_ms", "{:.2f}"),
    ("p99 ms", "p99_ms", "{:.2f}"),
    ("ttft p50 ms", "ttft_p50_ms", "{:.2f}"),
    ("ttft p99 ms", "ttft_p99_ms", "{:.2f}"),
    ("tok/s", "tokens_per_s", "{:.1f}"),
    ("server cpu ms/req", "server_cpu_ms_per_req", "{:.3f}"),
    ("server cpu%", "server_cpu_util", "{:.0%}"),
    ("upstream cpu ms/req", "upstream_cpu_ms_per_req", "{:.3f}"),
    ("client cpu ms/req", "client_cpu_ms_per_req", "{:.3f}"),
    ("other cpu%", "other_cpu_util", "{:.0%}"),
]

# Single figures of a row, printed under the table: (row key, format).
FIGURES = [
    ("cold_start_s", "{:.2f}"),
    ("healthy_s", "{:.2f}"),
    ("login_s", "{:.2f}"),
    ("ready_s", "{:.2f}"),
    ("first_analyze_ms", "{:.0f}"),
    ("second_analyze_ms", "{:.0f}"),
    ("load_s", "{:.2f}"),
    ("rss_start_mb", "{:.0f}"),
    ("rss_loaded_mb", "{:.0f}"),
    ("rss_loaded_anon_mb", "{:.0f}"),
    ("rss_loaded_file_mb", "{:.0f}"),
    ("rss_after_mb", "{:.0f}"),
    ("rss_after_anon_mb", "{:.0f}"),
    ("rss_after_file_mb", "{:.0f}"),
    ("rss_model_mb", "{:.0f}"),
    ("rss_model_anon_mb", "{:.0f}"),
    ("rss_model_file_mb", "{:.0f}"),
    ("crash_to_answer_s", "{:.2f}"),
    ("others_requests", "{}"),
    ("others_p50_ms", "{:.2f}"),
    ("others_p99_ms", "{:.2f}"),
    ("model_tokens_per_s", "{:.1f}"),
    ("tokens_per_s_min", "{:.1f}"),
    ("tokens_per_s_max", "{:.1f}"),
    ("prompt_tokens", "{}"),
    ("completion_tokens", "{}"),
    ("finish_reasons", "{}"),
    ("same_text", "{}"),
    ("accounting_cpu_ms_per_req", "{:.4f}"),
    ("k", "{}"),
    ("admitted", "{}"),
    ("refused", "{}"),
    ("ledger_rows", "{}"),
    ("overspend_usd", "{:.9f}"),
    ("budget_usd", "{:.9f}"),
    ("ledger_usd", "{:.9f}"),
    ("proof_s", "{:.2f}"),
    ("database", "{}"),
    ("note", "{}"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run this scenario (repeatable)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short windows, a smoke run"
    )
    parser.add_argument("--concurrency", default="1,64", help="comma-separated (1,64)")
    parser.add_argument("--warmup", type=float, help="seconds before each window (1)")
    parser.add_argument("--duration", type=float, help="seconds measured (4)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure summarize's variants this many times, interleaved; "
        "ratios use the median (1)",
    )
    parser.add_argument(
        "--before",
        metavar="REF",
        help="also measure summarize on the server at this git ref (e.g. main)",
    )
    args = parser.parse_args(argv)

    options = Options(
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        warmup=args.warmup or (0.3 if args.quick else 1.0),
        duration=args.duration or (1.0 if args.quick else 4.0),
        quick=args.quick,
        rounds=args.rounds,
    )
    names = [name for name in SCENARIOS if not args.only or name in args.only]
    info = machine()
    if info["loadavg_1m"] > 0.5:
        # Other processes share the two cores: numbers will be noisy.
        print(
            f"warning: load average {info['loadavg_1m']} before start", file=sys.stderr
        )
    rows: list[dict] = []
    # A terminated bench still stops its servers (the `finally` below).
    signal.signal(signal.SIGTERM, _interrupt)
    rig = Rig(RESULTS / "logs", before_ref=args.before)
    try:
        for name in names:
            print(f"running {name}: {SCENARIOS[name].description}", file=sys.stderr)
            started = time.monotonic()
            try:
                for row in SCENARIOS[name].run(rig, options):
                    rows.append({"scenario": name, **row})
            except ServerFailed as error:
                # The other scenarios' figures still count: the run goes on,
                # reports this one as failed, and exits 1.
                print(f"error: {name}: {error}", file=sys.stderr)
                note = f"failed: {str(error).splitlines()[0][:200]}"
                rows.append(
                    {"scenario": name, "concurrency": 0, "failures": 1, "note": note}
                )
            # What each costs of the run's ten minutes (make bench's budget).
            print(f"  {name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        rig.close()

    ratios = compute_ratios(rows)
    goals = targets.evaluate(rows)
    print(table(rows))
    print(figures(rows))
    for key, value in ratios.items():
        print(f"{key}: {value}")
    print(
        "cpu ms/req: the process's utime+stime over the window / requests done; "
        "other cpu%: the rest of the machine (100% = one core): high means noisy; "
        "ttft: time to the first text delta of a stream; tok/s: median of "
        "completion tokens / request time"
    )
    print()
    print(targets.block(goals, _load(info, rows)))
    report = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": info,
        "options": vars(options),
        "scenarios": {name: SCENARIOS[name].description for name in names},
        "results": rows,
        "ratios": ratios,
        "targets": goals,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)
    return 1 if any(row.get("failures") for row in rows) else 0


def _load(info: dict, rows: list[dict]) -> str:
    """How busy the machine was: load averages, and the CPU the rest of the
    machine took during the windows (in cores; 2 cores here)."""
    other = [row["other_cpu_util"] for row in rows if row.get("other_cpu_util")]
    spread = (
        f", other processes {statistics.median(other):.2f} cores median, "
        f"{max(other):.2f} max over the windows"
        if other
        else ""
    )
    return (
        f"load average {info['loadavg_1m']:.2f} at start, "
        f"{os.getloadavg()[0]:.2f} at end{spread}"
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# Scenarios that measure ours and its floor side by side ("side" of a row):
# the row keys compared, ours / direct.
SIDE_BY_SIDE = {
    "stream": ["ttft_p50_ms", "p50_ms"],
    "slow-upstream": ["closed_loop_rps", "rps", "p50_ms"],
    "embedded": ["tokens_per_s"],
}


def _median_of(rows: list[dict], variant: str, concurrency: int, key: str) -> float:
    values = [
        row[key]
        for row in rows
        if row["scenario"] == "summarize"
        and row.get("variant") == variant
        and row["concurrency"] == concurrency
        and row.get(key)
    ]
    return statistics.median(values) if values else 0.0


def compute_ratios(rows: list[dict]) -> dict[str, float]:
    """Ours against the baseline (CPU per request) and the floor (p50); and
    in side-by-side scenarios, ours against direct."""
    by = {
        (row["scenario"], row["concurrency"]): row for row in rows if "side" not in row
    }
    ratios = {}
    for ours in rows:
        if ours["scenario"] != "summarize":
            continue
        concurrency, variant = ours["concurrency"], ours.get("variant", "")
        pairs = [
            ("cpu_per_req_vs_baseline", "baseline", "server_cpu_ms_per_req"),
            ("p50_vs_direct", "direct", "p50_ms"),
        ]
        for label, other, key in pairs:
            reference = by.get((other, concurrency), {}).get(key)
            if reference and ours.get(key) is not None:
                ratios[f"{label}_{variant}@c{concurrency}"] = round(
                    ours[key] / reference, 2
                )
        # The same server before a change, in the same run (--before): the
        # median over rounds of each.
        key = "server_cpu_ms_per_req"
        label = f"cpu_per_req_{variant}_vs_before@c{concurrency}"
        kind = "hit" if variant == "hit" else "miss"
        before = _median_of(rows, f"{kind}-before", concurrency, key)
        if before and variant in ("miss", "miss-key", "hit") and label not in ratios:
            ratios[label] = round(
                _median_of(rows, variant, concurrency, key) / before, 3
            )
    from bench.spend import summary as spend_summary

    ratios.update(spend_summary([row for row in rows if row["scenario"] == "spend"]))
    for ours in rows:
        if not str(ours.get("side")).startswith("ours"):
            continue
        if ours["scenario"] not in SIDE_BY_SIDE:
            continue
        # "ours+others": ours while another client keeps the API busy.
        at = ours["side"].removeprefix("ours").removeprefix("+") + "@"
        at = at if at != "@" else ""
        at += f"t{ours['threads']}" if "threads" in ours else ""
        at += f"c{ours['concurrency']}"
        direct = next(
            (
                row
                for row in rows
                if row["scenario"] == ours["scenario"]
                and row.get("side") == "direct"
                and row.get("threads") == ours.get("threads")
                and row["concurrency"] == ours["concurrency"]
            ),
            {},
        )
        for key in SIDE_BY_SIDE[ours["scenario"]]:
            if direct.get(key) and ours.get(key) is not None:
                label = f"{ours['scenario']}_{key}_vs_direct@{at}"
                ratios[label] = round(ours[key] / direct[key], 3)
                if key.endswith("_ms"):
                    label = f"{ours['scenario']}_{key[:-3]}_extra_ms@{at}"
                    ratios[label] = round(ours[key] - direct[key], 3)
    return ratios


def figures(rows: list[dict]) -> str:
    """The FIGURES each row has, one line per row."""
    lines = []
    for row in rows:
        shown = [
            f"{key}={fmt.format(row[key])}"
            for key, fmt in FIGURES
            if row.get(key) is not None
        ]
        if shown:
            lines.append(
                f"{row['scenario']} {row.get('variant', '')}: " + " ".join(shown)
            )
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    cells = [[heading for heading, _, _ in COLUMNS]]
    for row in rows:
        cells.append(
            [
                "-" if row.get(key) is None else fmt.format(row[key])
                for _, key, fmt in COLUMNS
            ]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True))
        for line in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine() -> dict:
    versions = {}
    for package in (
        "uvicorn",
        "uvloop",
        "httptools",
        "starlette",
        "strawberry-graphql",
        "openai",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "loadavg_1m": os.getloadavg()[0],
        "packages": versions,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


if __name__ == "__main__":
    raise SystemExit(main())
