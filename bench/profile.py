"""`python -m bench.profile`: where our server's CPU goes under bench load.

Starts the servers as `make bench` does (bench.rig: our API with budgets, the
ledger, Redis and PostgreSQL when REDIS_URL and DATABASE_URL name them),
then, for each phase (a summarize cache miss and a hit at 64 connections,
and completeStream at 16), samples the API process with py-spy while the
load runs, and prints the top functions by inclusive and by self time and
the time of each component (bench/profile_report.py), each also as
milliseconds of CPU per request: its share of the samples times the CPU per
request measured in the same window.

py-spy is not a dependency of ours; install it into a virtualenv of its own:

    python3 -m venv ~/.cache/gptmini-graphql/tools && \\
        ~/.cache/gptmini-graphql/tools/bin/pip install py-spy

(found there, on PATH, or by --py-spy). It attaches to the running process
(ptrace: root, or CAP_SYS_PTRACE in a container).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench import profile_report
from bench.capacity import summarize_request
from bench.load import http_request, measure, own_cpu_seconds, run
from bench.registry import summary_check
from bench.rig import Rig
from bench.servers import Server, ServerFailed
from bench.stream import _graphql_delta, _graphql_stream_check
from bench.workload import STORY, STREAM_QUERY, graphql_body

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PY_SPY = Path.home() / ".cache" / "gptmini-graphql" / "tools" / "bin" / "py-spy"
PHASES = ("miss", "hit", "stream")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile", description=__doc__
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase (20)")
    parser.add_argument("--rate", type=int, default=250, help="samples/s (250)")
    parser.add_argument("--top", type=int, default=25, help="entries per list (25)")
    parser.add_argument("--phase", action="append", choices=PHASES)
    parser.add_argument("--py-spy", type=Path, help=f"default: {DEFAULT_PY_SPY}")
    parser.add_argument("--output", type=Path, default=RESULTS / "profile")
    args = parser.parse_args(argv)
    py_spy = args.py_spy or _find_py_spy()
    if py_spy is None:
        print(f"no py-spy at {DEFAULT_PY_SPY} or on PATH: see --help", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    rig = Rig(RESULTS / "logs")
    try:
        server = rig.api()
        for phase in args.phase or PHASES:
            raw = args.output / f"{phase}.txt"
            row = _sample(py_spy, server, phase, raw, args.seconds, args.rate)
            print(f"## {phase}: {_describe(row)}\n")
            print(profile_report.report(raw, row["server_cpu_ms_per_req"], args.top))
            print(f"(raw samples: {raw})\n", flush=True)
    except ServerFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        rig.close()
    return 0


def _find_py_spy() -> Path | None:
    if DEFAULT_PY_SPY.is_file():
        return DEFAULT_PY_SPY
    found = shutil.which("py-spy")
    return Path(found) if found else None


def _phase_load(server: Server, phase: str) -> dict:
    """measure()'s arguments for a phase."""
    if phase == "stream":
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "Authorization": f"Bearer {server.token}",
        }
        body = graphql_body(STREAM_QUERY, {"prompt": STORY})
        return {
            "request": http_request("POST", "/graphql", server.port, body, headers),
            "check": _graphql_stream_check,
            "first": _graphql_delta,
            "concurrency": 16,
        }
    return {
        "request": summarize_request(server, miss=phase == "miss"),
        "check": summary_check,
        "concurrency": 64,
    }


def _sample(
    py_spy: Path, server: Server, phase: str, raw: Path, seconds: float, rate: int
) -> dict:
    """Load for a second's warm-up and then `seconds`, while py-spy samples
    them all (the warm-up is the same load); the measured window's row."""
    duration = int(seconds)
    command = [
        str(py_spy), "record", "--pid", str(server.process.pid), "--format", "raw",
        "--nolineno", "--rate", str(rate), "--duration", str(duration + 1),
        "--output", str(raw),
    ]  # fmt: skip
    with raw.with_suffix(".log").open("wb") as log:
        spy = subprocess.Popen(  # noqa: S603 (our own argv)
            command, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            row = run(
                measure(
                    port=server.port,
                    warmup=1.0,
                    duration=duration,
                    cpu={"server": server.cpu_seconds, "client": own_cpu_seconds},
                    **_phase_load(server, phase),
                )
            )
        finally:
            code = spy.wait(60)
    if code != 0:
        raise ServerFailed(f"py-spy failed: see {raw.with_suffix('.log')}")
    return row


def _describe(row: dict) -> str:
    parts = [
        f"{row['concurrency']} connections",
        f"{row['requests']} requests",
        f"{row['rps']:.0f} req/s",
        f"server CPU {row['server_cpu_ms_per_req']:.3f} ms/req",
        f"{row['server_cpu_util']:.0%} of a core",
        f"other processes {row['other_cpu_util']:.2f} cores",
        f"load average {os.getloadavg()[0]:.2f}",
    ]
    return ", ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
