"""A light load generator: asyncio streams speaking HTTP/1.1 keep-alive, one
connection per concurrent worker, pre-encoded requests.

httpx would cost more CPU per request than the servers under test, and on two
cores every client cycle is taken from them.
"""

from __future__ import annotations

import asyncio
import math
import os
import statistics
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REQUEST_TIMEOUT = 10.0  # seconds; a slower answer counts as a failure
CHECK_EVERY = 16  # check one body in this many (and the first)


def http_request(
    method: str, path: str, port: int, body: bytes = b"", headers: dict | None = None
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(
    reader: asyncio.StreamReader, first: Callable[[bytes], bool] | None = None
) -> tuple[int, bytes, bool, float | None]:
    """(status, body, server closes, first event's arrival) of one response.

    A chunked body (a stream) is read chunk by chunk as it arrives; the last
    item is the `perf_counter` time of the first chunk `first` accepts (None
    without `first`, or when none does).
    """
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, close = None, False, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value
        elif name == b"connection":
            close = value == b"close"
    if chunked:
        parts, first_at = [], None
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append((await reader.readexactly(size + 2))[:-2])
            if first_at is None and first is not None and first(parts[-1]):
                first_at = time.perf_counter()
        await reader.readuntil(b"\r\n")  # no trailers expected
        return status, b"".join(parts), close, first_at
    if length is None:
        return status, await reader.read(), True, None
    return status, await reader.readexactly(length), close, None


@dataclass
class _Run:
    port: int
    request: bytes
    check: Callable[[bytes], str | None]
    max_requests: int
    first: Callable[[bytes], bool] | None = None  # a stream's first event
    sent: int = 0
    stop: bool = False
    window: bool = False  # completions count only while the window is open
    latencies: list[float] = field(default_factory=list)
    first_latencies: list[float] = field(default_factory=list)
    # A connection's time from one request's start to its next one's, in
    # the window: a closed loop's throughput is connections / their mean.
    cycles: list[float] = field(default_factory=list)
    failures: int = 0
    failure_samples: list[str] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        self.failures += 1
        if len(self.failure_samples) < 5:
            self.failure_samples.append(reason[:300])

    async def worker(self) -> None:
        writer = None
        last_started: float | None = None  # this connection's, in the window
        try:
            while not self.stop and self.sent < self.max_requests:
                if writer is None:
                    try:
                        reader, writer = await asyncio.open_connection(
                            "127.0.0.1", self.port
                        )
                    except OSError as exc:
                        self.fail(f"connect: {exc!r}")
                        await asyncio.sleep(0.1)
                        continue
                number = self.sent
                self.sent += 1
                started = time.perf_counter()
                if self.window and last_started is not None:
                    self.cycles.append(started - last_started)
                last_started = started if self.window else None
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT):
                        writer.write(self.request)
                        status, body, close, first_at = await read_response(
                            reader, self.first
                        )
                except (
                    OSError,
                    TimeoutError,
                    ValueError,
                    asyncio.IncompleteReadError,
                ) as exc:
                    self.fail(f"transport: {exc!r}")
                    writer.close()
                    writer = None
                    continue
                latency = time.perf_counter() - started
                if close:
                    writer.close()
                    writer = None
                if status != 200:
                    self.fail(f"status {status}: {body[:200]!r}")
                elif self.first is not None and first_at is None:
                    self.fail(f"no first event: {body[:200]!r}")
                elif number % CHECK_EVERY == 0 and (problem := self.check(body)):
                    self.fail(problem)
                elif self.window:
                    self.latencies.append(latency)
                    if first_at is not None:
                        self.first_latencies.append(first_at - started)
        finally:
            if writer is not None:
                writer.close()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when installed: a cheaper client leaves more CPU to servers."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as file:
        fields = file.read().rpartition(b")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of a process and of its children, live or waited for."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
    except OSError:  # it ended meanwhile
        return 0.0
    own = sum(int(field) for field in fields[11:15])  # utime stime cutime cstime
    return own / os.sysconf("SC_CLK_TCK") + sum(map(tree_cpu_seconds, _children(pid)))


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [
            int(child)
            for task in tasks
            for child in (task / "children").read_text().split()
        ]
    except OSError:  # it ended meanwhile
        return []


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine, from /proc/stat (all cores)."""
    with open("/proc/stat", "rb") as file:
        user, nice, system, _idle, _iowait, irq, softirq, steal = map(
            int, file.readline().split()[1:9]
        )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def measure(
    *,
    port: int,
    request: bytes,
    concurrency: int,
    warmup: float,
    duration: float,
    check: Callable[[bytes], str | None],
    cpu: dict[str, Callable[[], float]],
    max_requests: int = 1_000_000,
    first: Callable[[bytes], bool] | None = None,
) -> dict:
    """Warm up, then count what completes in a `duration` window.

    `cpu` names CPU-seconds probes (servers, and this client) read at the
    window's edges; each gives CPU ms per completed request. What the whole
    machine spent beyond them is `other_cpu_util`: other work on the machine
    makes a run noisy, and this says how noisy.
    """
    cpu = {**cpu, "machine": machine_cpu_seconds}
    state = _Run(port, request, check, max_requests, first)
    tasks = [asyncio.create_task(state.worker()) for _ in range(concurrency)]
    try:
        await asyncio.wait(tasks, timeout=warmup)
        before = {name: probe() for name, probe in cpu.items()}
        started = time.perf_counter()
        state.window = True
        await asyncio.wait(tasks, timeout=duration)
        state.window = False
        elapsed = time.perf_counter() - started
        after = {name: probe() for name, probe in cpu.items()}
        state.stop = True
        await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT + 1)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    done = len(state.latencies)
    row = {
        "concurrency": concurrency,
        "requests": done,
        "failures": state.failures,
        "window_s": round(elapsed, 3),
        "rps": round(done / elapsed, 1),
        # What completes in a window counts whole bursts of a load that
        # moves in step (64 answers every 200 ms: 19 or 20 of them in 4 s,
        # by where the window's edges fall); connections / mean cycle does not.
        "closed_loop_rps": round(concurrency / statistics.fmean(state.cycles), 1)
        if state.cycles
        else None,
        **latency_stats(state.latencies),
    }
    if first is not None:
        ttft = latency_stats(state.first_latencies)
        row["ttft_p50_ms"], row["ttft_p99_ms"] = ttft["p50_ms"], ttft["p99_ms"]
    spent = {name: after[name] - before[name] for name in cpu}
    machine = spent.pop("machine")
    for name, seconds in spent.items():
        row[f"{name}_cpu_ms_per_req"] = (
            round(seconds * 1000 / done, 3) if done else None
        )
        row[f"{name}_cpu_util"] = round(seconds / elapsed, 3)
    # In cores: 1.0 is one core's worth of other work.
    row["other_cpu_util"] = round(max(machine - sum(spent.values()), 0) / elapsed, 3)
    if state.failure_samples:
        row["failure_samples"] = state.failure_samples
    return row


def latency_stats(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        # Nearest rank: a latency some request really had.
        rank = max(math.ceil(p / 100 * len(ordered)), 1)
        return round(ordered[rank - 1] * 1000, 3)

    return {
        "p50_ms": percentile(50),
        "p99_ms": percentile(99),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


def memory(pid: int, when: str) -> dict:
    """Resident memory (MiB) from /proc: all, anonymous, and file-backed (an
    mmap-ed model file's pages in use, say)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile"):
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {
        f"rss_{when}_mb": fields.get("VmRSS"),
        f"rss_{when}_anon_mb": fields.get("RssAnon"),
        f"rss_{when}_file_mb": fields.get("RssFile"),
    }
