"""`python -m bench.callgrind`: instructions per cache hit, counted by callgrind.

Our server as the bench runs it (bench.rig: auth, rate limits, budgets, the
ledger; the answer cache and limits in Redis when REDIS_URL names it; the
fake upstream), started under `valgrind --tool=callgrind`. A login, one
summarize that fills the answer cache, a warm-up of identical hits, then
callgrind's counters are zeroed, `--hits` identical hits are sent over
`--concurrency` keep-alive connections by this (uninstrumented) process,
and the counters are dumped: the dump holds those hits alone. Prints the
instructions per hit and `callgrind_annotate --inclusive=yes`'s top entries.

Instruction counts repeat from run to run where timings on a shared
machine do not: compare two commits with `--source` (another checkout) or
`--ref` (a commit, extracted with git archive), one after the other.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import pstats
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.capacity import summarize_request
from bench.databases import drop, fresh_database
from bench.load import read_response
from bench.registry import summary_check
from bench.rig import BUDGETS, Rig
from bench.servers import ROOT, Server, login

RESULTS = Path(__file__).resolve().parent / "results" / "callgrind"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.callgrind", description=__doc__
    )
    parser.add_argument("--hits", type=int, default=640, help="measured (640)")
    parser.add_argument("--warmup", type=int, default=256, help="hits before (256)")
    parser.add_argument("--concurrency", type=int, default=64, help="connections (64)")
    parser.add_argument("--source", type=Path, help="a checkout to run (default: ours)")
    parser.add_argument("--ref", help="a commit to run (git archive of it)")
    parser.add_argument("--name", default="hit", help="output file's name")
    parser.add_argument("--top", type=int, default=60, help="annotate lines shown")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--cprofile", action="store_true",
        help="cProfile instead of callgrind (Python functions, by time)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as work:
        source = args.source or ROOT
        if args.ref:
            source = Path(work) / "source"
            _extract(args.ref, source)
        per_hit, dump = _measure(args, Path(work), source.resolve())
    if args.cprofile:
        stats = pstats.Stats(str(dump))
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        return 0
    annotated = subprocess.run(  # noqa: S603 (our own argv)
        ["callgrind_annotate", "--inclusive=yes", str(dump)],  # noqa: S607
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (dump.with_suffix(".annotate.txt")).write_text(annotated)
    print(f"{args.name}: {per_hit:,.0f} instructions per hit ({source})")
    print("\n".join(annotated.splitlines()[: args.top]))
    print(f"(dump: {dump})")
    return 0


def _extract(ref: str, source: Path) -> None:
    archive = subprocess.run(  # noqa: S603
        ["git", "-C", str(ROOT), "archive", ref],  # noqa: S607
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    source.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")


def _measure(args: argparse.Namespace, work: Path, source: Path) -> tuple[float, Path]:
    rig = Rig(args.output / "logs")
    database = fresh_database(work, "callgrind")
    try:
        upstream = rig.upstream()
        env = rig.api_env(
            {
                "OPENAI_BASE_URL": upstream.url + "/v1",
                "OPENAI_API_KEY": "bench",
                "DATABASE_URL": database,
                "PYTHONPATH": str(source),
                **BUDGETS,
            }
        )
        rig._migrate(env, work)
        dump = args.output / f"{args.name}.callgrind"
        serve = ["serve", "--port", "{port}"]
        argv = [
            "valgrind", "--tool=callgrind", "--dump-instr=no",
            "--instr-atstart=no", f"--callgrind-out-file={dump}",
            sys.executable, "-m", "gptmini_graphql", *serve,
        ]  # fmt: skip
        if args.cprofile:
            dump = dump.with_suffix(".pstats")
            argv = [sys.executable, "-m", "bench.profiled_serve", str(dump), *serve]
            env["PYTHONPATH"] = os.pathsep.join([str(source), str(ROOT)])
        server = rig.start("api-callgrind", argv, env=env, cwd=work, start_timeout=600)
        pid = server.process.pid
        server.token = login(server.port)
        if not args.cprofile:
            _control(pid, "-i", "on")
        request = summarize_request(server, miss=False)
        asyncio.run(_hits(server.port, request, 1, 1))  # fills the cache
        asyncio.run(_hits(server.port, request, args.warmup, args.concurrency))
        before = _upstream_calls(server)
        if args.cprofile:
            os.kill(pid, signal.SIGUSR1)
        else:
            _control(pid, "-z")
        asyncio.run(_hits(server.port, request, args.hits, args.concurrency))
        if args.cprofile:
            os.kill(pid, signal.SIGUSR2)
            _wait_for(dump)
        else:
            _control(pid, "-d")
        if _upstream_calls(server) != before:
            raise SystemExit("some measured requests were not cache hits")
        server.stop()
    finally:
        rig.close()
        drop(database)
    if args.cprofile:
        return 0.0, dump
    dumped = sorted(dump.parent.glob(dump.name + ".*"), key=os.path.getmtime)
    # `-d` writes <dump>.1 (the zeroed interval); the exit writes <dump>.
    measured = next(path for path in dumped if path.name.endswith(".1"))
    final = measured.with_name(dump.name)
    measured.replace(final)
    return _total(final) / args.hits, final


def _control(pid: int, *options: str) -> None:
    subprocess.run(  # noqa: S603
        ["callgrind_control", *options, str(pid)],  # noqa: S607
        check=True, capture_output=True,
    )  # fmt: skip


def _upstream_calls(server: Server) -> list[str]:
    """/metrics' lines about upstream calls: unchanged over hits alone."""
    connection = __import__("http.client").client.HTTPConnection(
        "127.0.0.1", server.port, timeout=60
    )
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return [
        line
        for line in text.splitlines()
        if "upstream" in line and not line.startswith("#") and "_count" in line
    ]


def _wait_for(path: Path) -> None:
    for _ in range(100):
        if path.exists():
            time.sleep(0.5)  # written whole
            return
        time.sleep(0.1)
    raise SystemExit(f"no {path}")


def _total(dump: Path) -> int:
    match = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.MULTILINE)
    assert match is not None, dump
    return int(match.group(1))


async def _hits(port: int, request: bytes, hits: int, concurrency: int) -> None:
    """`hits` requests over `concurrency` keep-alive connections, each checked."""
    counts = [
        hits // concurrency + (i < hits % concurrency) for i in range(concurrency)
    ]

    async def connection(count: int) -> None:
        if not count:
            return
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(count):
                writer.write(request)
                status, body, _, _ = await read_response(reader)
                if status != 200 or summary_check(body):
                    raise SystemExit(f"bad answer: {status} {body[:300]!r}")
        finally:
            writer.close()

    await asyncio.gather(*(connection(count) for count in counts))


if __name__ == "__main__":
    raise SystemExit(main())
