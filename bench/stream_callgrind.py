"""`python -m bench.stream_callgrind`: instructions our server spends per
completeStream over SSE, counted by valgrind's callgrind (repeatable, where
CPU time on a shared two-core machine is not).

Our app (create_app, served by uvicorn with `serve`'s HTTP protocol and
loop, as `make bench` runs it) is the one process callgrind runs. A client
in a process of its own logs in and reads each stream over a real socket;
the fake upstream (bench/fake_upstream.py, with BENCH_STREAM_DELTAS text
deltas) is a third process. Budgets, rate limits and the ledger are
bench.rig's: Redis when REDIS_URL is set (its database flushed first), the
ledger in a fresh PostgreSQL database when DATABASE_URL names a server.

Only the measured streams are counted: start-up, login and the warm-up
streams run first, and the measured streams run inside `sys.call_tracing`,
the C function that callgrind's --toggle-collect names. Streams of 2 and
of 20 deltas tell a stream's set-up (everything but its chunks) from the
cost of each chunk.

    python -m bench.stream_callgrind [--chunks 2 --chunks 20] [--source DIR]

`--source DIR`: serve the package from another checkout (main's, for the
baseline). Prints instructions per stream, and the top functions by
inclusive cost (`callgrind_annotate --inclusive=yes`); callgrind's output
stays in bench/results/callgrind/.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "callgrind"
STREAM_QUERY = (
    "subscription Stream($prompt: String!) "
    "{ completeStream(prompt: $prompt, maxTokens: 64) "
    "{ text done finishReason model usage { completionTokens costUsd } } }"
)
PROMPT = "Write a long, detailed story about a lighthouse keeper. Use many chapters."
# The C function the measured streams run inside (`sys.call_tracing`).
TOGGLE = "sys_call_tracing"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stream_callgrind", description=__doc__
    )
    parser.add_argument("--chunks", type=int, action="append")
    parser.add_argument("--streams", type=int, default=40, help="measured (40)")
    parser.add_argument("--warmup", type=int, default=15, help="streams first (15)")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--label", default="")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--cprofile",
        action="store_true",
        help="no callgrind: cProfile the measured streams (Python functions, "
        "calls per stream), sorted by cumulative time",
    )
    parser.add_argument(
        "--native",
        action="store_true",
        help="no callgrind: only check the streams (and count collector passes)",
    )
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.chunks = args.chunks or [2, 20]
    if args.inner:
        return _inner(args)
    if args.client:
        return _client(args)
    return _outer(args)


# -- the driver: upstream, database, callgrind -----------------------------------


def _outer(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT))
    from bench.databases import drop, fresh_database
    from bench.rig import BUDGETS
    from bench.servers import Server, free_port, uvicorn_argv

    RESULTS.mkdir(parents=True, exist_ok=True)
    source = args.source.resolve()
    label = args.label or source.name
    rows = []
    for chunks in args.chunks:
        work = Path(tempfile.mkdtemp(prefix="callgrind-"))
        upstream = Server(
            f"upstream-{chunks}",
            [*uvicorn_argv("bench.fake_upstream:app"), "--lifespan", "off"],
            work / "upstream.log",
            env={"BENCH_STREAM_DELTAS": str(chunks)},
        )
        database = fresh_database(work, "callgrind")
        try:
            env = {
                **os.environ,
                "PYTHONPATH": str(source),
                "OPENAI_BASE_URL": upstream.url + "/v1",
                "OPENAI_API_KEY": "bench",
                "DATABASE_URL": database,
                "RATE_LIMIT": "1000000/minute",
                "LOGIN_RATE_LIMIT": "1000000/minute",
                "LOGIN_USERNAME_FAILURE_LIMIT": "1000000/hour",
                "LOG_LEVEL": "INFO",
                **BUDGETS,
            }
            if env.get("REDIS_URL"):
                _flush_redis(env["REDIS_URL"])
            subprocess.run(
                [sys.executable, "-m", "gptmini_graphql", "db", "upgrade"],
                cwd=work,
                env=env,
                check=True,
                capture_output=True,
            )
            out = RESULTS / f"{label}-{chunks}.out"
            callgrind = [
                "valgrind", "--tool=callgrind", "--dump-instr=no",
                "--collect-atstart=no", f"--toggle-collect={TOGGLE}",
                f"--callgrind-out-file={out}",
            ]  # fmt: skip
            if args.cprofile:
                out = RESULTS / f"{label}-{chunks}.pstats"
                callgrind = []
            elif args.native:
                callgrind = []
            command = [
                *callgrind,
                sys.executable, __file__, "--inner",
                *(["--cprofile", "--label", str(out)] if args.cprofile else []),
                "--port", str(free_port()), "--chunks", str(chunks),
                "--streams", str(args.streams), "--warmup", str(args.warmup),
                "--concurrency", str(args.concurrency),
            ]  # fmt: skip
            with (work / "server.log").open("wb") as log:
                subprocess.run(  # noqa: S603 (our own argv)
                    command, cwd=work, env=env, check=True, stdout=log
                )
        finally:
            upstream.stop()
            drop(database)
        if args.cprofile:
            _print_profile(out, args.streams, args.top)
            continue
        if args.native:
            continue
        total = _total(out)
        rows.append((chunks, total / args.streams))
        print(
            f"{label}: {chunks} chunks: {total / args.streams / 1e6:.3f} M "
            f"instructions per stream ({args.streams} streams, {out})",
            flush=True,
        )
        if args.top:
            print(_annotate(out, args.top), flush=True)
    if len(rows) == 2:
        (few, few_cost), (many, many_cost) = sorted(rows)
        per_chunk = (many_cost - few_cost) / (many - few)
        print(
            f"{label}: per chunk {per_chunk / 1e3:.1f} k, set-up "
            f"{(few_cost - few * per_chunk) / 1e6:.3f} M instructions per stream"
        )
    return 0


def _print_profile(out: Path, streams: int, top: int) -> None:
    import pstats

    stats = pstats.Stats(str(out))
    print(f"{out}: calls and ms per stream, by cumulative time")
    entries = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][3],
        reverse=True,
    )
    total = max(entry[1][3] for entry in entries)
    for (file, line, name), (_, calls, tottime, cumtime, _) in entries[:top]:
        where = f"{Path(file).parent.name}/{Path(file).name}:{line}" if line else file
        print(
            f"{cumtime / total:6.1%} {cumtime / streams * 1e3:7.3f} cum "
            f"{tottime / streams * 1e3:7.3f} self {calls / streams:7.1f}x  "
            f"{name}  {where}"
        )


def _flush_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def _total(out: Path) -> int:
    for line in out.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise ValueError(f"no totals in {out}")


def _annotate(out: Path, top: int) -> str:
    """The top functions by inclusive instructions, as a share of all."""
    text = subprocess.run(  # noqa: S603
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = _total(out)
    lines = []
    for line in text.splitlines():
        match = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line) or re.match(
            r"\s*([\d,]+)\s+(\S.*)", line
        )
        if not match or "PROGRAM TOTALS" in line:
            continue
        count = int(match.group(1).replace(",", ""))
        lines.append(f"{count / total:7.1%}  {match.group(2)[:150]}")
        if len(lines) >= top:
            break
    return "\n".join(lines)


# -- the server, under callgrind ---------------------------------------------------


def _inner(args: argparse.Namespace) -> int:
    import uvicorn

    import gptmini_graphql
    from gptmini_graphql.app import create_app
    from gptmini_graphql.http_protocol import OneWriteHTTPProtocol

    print(f"serving {gptmini_graphql.__file__}", file=sys.stderr)

    config = uvicorn.Config(
        create_app(),
        host="127.0.0.1",
        port=args.port,
        http=OneWriteHTTPProtocol,
        loop="auto",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    # serve's loop (uvloop, when installed), run here turn by turn.
    factory = config.get_loop_factory() or asyncio.new_event_loop
    loop = factory()
    asyncio.set_event_loop(loop)
    serving = loop.create_task(server.serve())

    async def started() -> asyncio.subprocess.Process:
        while not server.started:  # noqa: ASYNC110 (uvicorn's flag, no event)
            await asyncio.sleep(0.05)
        client = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--client", "--port", str(args.port),
            "--chunks", str(args.chunks[0]), "--concurrency", str(args.concurrency),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await streams(client, args.warmup)
        return client

    async def streams(client: asyncio.subprocess.Process, count: int) -> None:
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(f"run {count}\n".encode())
        await client.stdin.drain()
        answer = (await client.stdout.readline()).decode()
        if answer.strip() != "ok":
            raise SystemExit(f"client: {answer!r}")
        # The ledger's rows of these streams written before the next phase.
        await asyncio.sleep(0.5)

    client = loop.run_until_complete(started())
    # The collector's passes in the measured streams, by generation: they
    # come in steps (every so many allocations), so a change can add or save
    # a whole pass.
    passes = [0, 0, 0]

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes[info["generation"]] += 1

    gc.callbacks.append(count)
    if args.cprofile:
        import cProfile

        # CPU time, not wall time: waits for the upstream or Redis are not costs.
        profile = cProfile.Profile(time.thread_time)
        profile.enable()
        loop.run_until_complete(streams(client, args.streams))
        profile.disable()
        profile.dump_stats(args.label)
    else:
        # Counted: only what runs inside sys.call_tracing (--toggle-collect).
        sys.call_tracing(loop.run_until_complete, (streams(client, args.streams),))
    gc.callbacks.remove(count)
    print(f"collector passes by generation: {passes}", file=sys.stderr)
    assert client.stdin is not None
    client.stdin.close()
    loop.run_until_complete(client.wait())
    server.should_exit = True
    loop.run_until_complete(serving)
    loop.close()
    return 0


# -- the client, in a process of its own --------------------------------------------


def _client(args: argparse.Namespace) -> int:
    body = json.dumps(
        {
            "query": "mutation Login($username: String!, $password: String!) "
            "{ login(username: $username, password: $password) { accessToken } }",
            "variables": {"username": "test_user", "password": "1234"},
        }
    ).encode()
    _, answer = _post(args.port, body, {})
    token = json.loads(answer)["data"]["login"]["accessToken"]
    request = json.dumps({"query": STREAM_QUERY, "variables": {"prompt": PROMPT}})
    headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {token}"}
    connections = [
        http.client.HTTPConnection("127.0.0.1", args.port, timeout=600)
        for _ in range(args.concurrency)
    ]
    lock = threading.Lock()
    for line in sys.stdin:
        left = iter(range(int(line.split()[1])))
        failures: list[str] = []

        def run(
            connection: http.client.HTTPConnection,
            left: Iterator[int] = left,
            failures: list[str] = failures,
        ) -> None:
            while True:
                with lock:
                    if next(left, None) is None:
                        return
                connection.request(
                    "POST",
                    "/graphql",
                    request.encode(),
                    {"Content-Type": "application/json", **headers},
                )
                response = connection.getresponse()
                problem = _check(response.status, response.read(), args.chunks[0])
                if problem:
                    failures.append(problem)

        threads = [
            threading.Thread(target=run, args=(c,), daemon=True) for c in connections
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        print("ok" if not failures else f"failed: {failures[0]}", flush=True)
    return 0


def _post(port: int, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request(
            "POST", "/graphql", body, {"Content-Type": "application/json", **headers}
        )
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _check(status: int, body: bytes, chunks: int) -> str | None:
    events = [
        json.loads(line[6:])["data"]["completeStream"]
        for line in body.splitlines()
        if line.startswith(b"data: ") and line[6:].strip()
    ]
    last = events[-1] if events else {}
    if (
        status != 200
        or not body.endswith(b"event: complete\r\ndata: \r\n\r\n")
        or len(events) != chunks + 1
        or (last.get("usage") or {}).get("completionTokens") != chunks
    ):
        return f"{status} {body[-300:]!r}"
    return None


if __name__ == "__main__":
    # Run as a file: its folder (bench/, with a profile.py) is not a place
    # to import from.
    if Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    started = time.monotonic()
    code = main()
    if "--inner" not in sys.argv and "--client" not in sys.argv:
        print(f"({time.monotonic() - started:.0f} s)", file=sys.stderr)
    raise SystemExit(code)
