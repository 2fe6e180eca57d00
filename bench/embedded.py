"""`python -m bench --only embedded`: the embedded model through our server
against llama.cpp directly (same file, messages, max_tokens, threads), cold
start to the first answer, resident memory, a crashed model's recovery, and
what the model and the rest of the API cost each other on two cores. Over
300 lines, as one concept: the scenario and the helpers only it uses."""

from __future__ import annotations

import json
import os
import select
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.load import cpu_seconds, latency_stats, machine_cpu_seconds, memory
from bench.registry import Options, scenario
from bench.rig import Rig
from bench.servers import ROOT, Server, ServerFailed, http_json, login
from bench.workload import (
    ANALYZE_QUERY,
    COMPLETE_MAX_TOKENS,
    COMPLETE_QUERY,
    LOCAL_CONTEXT_SIZE,
    LOCAL_MODEL_PATH,
    REVIEW,
    REVIEW_AGAIN,
    STORY,
    complete_messages,
    graphql_body,
)
from gptmini_graphql.settings import Settings
from tests.model_process import model_processes

READY_TIMEOUT = 60.0  # seconds for the model to load
GENERATION_TIMEOUT = 180.0  # seconds for one completion (rig: the server allows 150)


@scenario(
    "embedded",
    "complete on the embedded model through our server vs llama.cpp's "
    "create_chat_completion directly (same file, messages, max_tokens, threads): "
    "tokens/s; cold start to the first analyze; resident memory",
)
def embedded(rig: Rig, options: Options) -> list[dict]:
    cores = os.cpu_count() or 2
    default = _default_threads()
    repetitions = 2 if options.quick else 5
    rows = []
    for threads in sorted({default, cores}):
        rows += _embedded_pair(rig, threads, repetitions)
    return rows


def _default_threads() -> int:
    """The server's LOCAL_THREADS default (cores - 1)."""
    return Settings.model_fields["local_threads"].default_factory()


@dataclass(frozen=True)
class _Generation:
    seconds: float
    cpu_seconds: float
    other_cpu_seconds: float  # the rest of the machine meanwhile: noise
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    text: str


def _embedded_pair(rig: Rig, threads: int, repetitions: int) -> list[dict]:
    """Our server and llama.cpp directly, one request each in turn (so drift
    and noise fall on both); the first of each only warms up."""
    started = time.perf_counter()
    server = rig.embedded(threads)
    others_seen: list[float] = []
    try:
        ours_extra, token = _cold_start(server, started)
        arguments = {
            "messages": complete_messages(STORY, COMPLETE_MAX_TOKENS),
            "max_tokens": COMPLETE_MAX_TOKENS,
            "temperature": 0,
        }
        ours: list[_Generation] = []
        theirs: list[_Generation] = []
        loaded: list[_Generation] = []
        with _DirectLlama(threads, rig.log_dir) as direct:
            for repetition in range(1 + repetitions):
                mine, its = _complete(server, token), direct.complete(arguments)
                with _OtherRequests(server, token) as others:
                    busy = _complete(server, token)
                if repetition:
                    ours.append(mine)
                    theirs.append(its)
                    loaded.append(busy)
                    others_seen.extend(others.latencies)
            direct_extra = {"load_s": direct.load_s, **memory(direct.pid, "after")}
        ours_extra |= memory(server.process.pid, "after")
        ours_extra |= memory(_model_pid(server), "model")
        ours_extra |= _logged_speed(server.log)
        ours_extra |= _crash_recovery(server, token)
    finally:
        rig.stop(server.name)
    same = [a.text == b.text for a, b in zip(ours, theirs, strict=True)]
    ours_extra["same_text"] = all(same)
    return [
        _generation_row("ours", threads, ours, ours_extra),
        _generation_row("direct", threads, theirs, direct_extra),
        # The same generations while another client keeps the API busy: what
        # LOCAL_THREADS costs the rest of the API, and the rest costs it.
        _generation_row(
            "ours+others",
            threads,
            loaded,
            {
                "others_requests": len(others_seen),
                "others_p50_ms": round(statistics.median(others_seen) * 1000, 2),
                "others_p99_ms": round(
                    statistics.quantiles(others_seen, n=100)[98] * 1000, 2
                ),
            },
        ),
    ]


def _cold_start(server: Server, started: float) -> tuple[dict, str]:
    """From process start: healthy, logged in, model ready, first analyze
    answered (the grammar must not be compiled on this request)."""
    healthy = time.perf_counter() - started
    token = login(server.port)
    logged_in = time.perf_counter() - started
    deadline = time.monotonic() + READY_TIMEOUT
    while http_json(server.port, "GET", "/readyz")[0] != 200:
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise ServerFailed(f"{server.name}: model not ready; see {server.log}")
        time.sleep(0.02)
    ready = time.perf_counter() - started
    loaded = memory(server.process.pid, "loaded")
    answer = _graphql(server, token, ANALYZE_QUERY, {"text": REVIEW})["analyze"]
    answered = time.perf_counter() - started
    if answer.get("model") != _local_model_name():
        raise ServerFailed(f"{server.name}: not the embedded model's answer: {answer}")
    # Another text, warm: the first must not be much slower (another text, so
    # llama.cpp's cache holds only the shared prefix of the prompt).
    _graphql(server, token, ANALYZE_QUERY, {"text": REVIEW_AGAIN})
    again = time.perf_counter() - started - answered
    return {
        "cold_start_s": round(answered, 3),
        "healthy_s": round(healthy, 3),
        "login_s": round(logged_in, 3),
        "ready_s": round(ready, 3),
        "first_analyze_ms": round((answered - ready) * 1000, 1),
        "second_analyze_ms": round(again * 1000, 1),
        **loaded,
    }, token


class _OtherRequests:
    """Another client on a thread of its own, sending cheap authenticated
    GraphQL requests back to back; the latency of each is recorded."""

    QUERY = graphql_body("{ __typename }", {})

    def __init__(self, server: Server, token: str) -> None:
        self.server, self.token = server, token
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _OtherRequests:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        headers = {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.token}",
        }
        while not self._stop.is_set():
            started = time.perf_counter()
            http_json(self.server.port, "POST", "/graphql", self.QUERY, headers)
            self.latencies.append(time.perf_counter() - started)


def _model_pid(server: Server) -> int:
    """The model process our server supervises (its only `llm serve` child)."""
    found = model_processes(server.process.pid)
    if len(found) != 1:
        raise ServerFailed(f"{server.name}: {len(found)} model processes, not 1")
    return found[0].pid


def _crash_recovery(server: Server, token: str) -> dict:
    """SIGKILL the model process; seconds until a request is answered again."""
    os.kill(_model_pid(server), signal.SIGKILL)
    killed = time.perf_counter()
    variables = {"prompt": "Say hi.", "maxTokens": 4}
    while True:
        if time.perf_counter() - killed > READY_TIMEOUT:
            raise ServerFailed(f"{server.name}: no answer after the model crashed")
        try:
            _graphql(server, token, COMPLETE_QUERY, variables)
            break
        except ServerFailed:
            time.sleep(0.02)  # UPSTREAM_UNAVAILABLE while it restarts
    return {"crash_to_answer_s": round(time.perf_counter() - killed, 2)}


def _local_model_name() -> str:
    return Settings.model_fields["local_model_name"].default


def _graphql(server: Server, token: str, query: str, variables: dict) -> dict:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    body = graphql_body(query, variables)
    status, answer = http_json(
        server.port, "POST", "/graphql", body, headers, timeout=GENERATION_TIMEOUT
    )
    if status != 200 or not isinstance(answer, dict) or answer.get("errors"):
        raise ServerFailed(f"{server.name}: {status} {str(answer)[:500]}")
    return answer["data"]


def _complete(server: Server, token: str) -> _Generation:
    cpu, machine = server.cpu_seconds(), machine_cpu_seconds()
    started = time.perf_counter()
    variables = {"prompt": STORY, "maxTokens": COMPLETE_MAX_TOKENS}
    answer = _graphql(server, token, COMPLETE_QUERY, variables)["complete"]
    seconds = time.perf_counter() - started
    cpu = server.cpu_seconds() - cpu
    return _Generation(
        seconds=seconds,
        cpu_seconds=cpu,
        other_cpu_seconds=machine_cpu_seconds() - machine - cpu,
        prompt_tokens=answer["usage"]["promptTokens"],
        completion_tokens=answer["usage"]["completionTokens"],
        finish_reason=answer["finishReason"].lower(),
        text=answer["text"],
    )


class _DirectLlama:
    """bench.llama_direct in a subprocess: one JSON line in, one out."""

    def __init__(self, threads: int, log_dir: Path) -> None:
        argv = [
            sys.executable, "-m", "bench.llama_direct",
            str(LOCAL_MODEL_PATH), str(threads), str(LOCAL_CONTEXT_SIZE),
        ]  # fmt: skip
        with (log_dir / f"llama-direct-t{threads}.log").open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 (our own argv)
                argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True,
            )  # fmt: skip
        self.pid = self.process.pid
        self.load_s = self._read()["load_s"]

    def __enter__(self) -> _DirectLlama:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()

    def complete(self, arguments: dict) -> _Generation:
        cpu, machine = cpu_seconds(self.pid), machine_cpu_seconds()
        self.process.stdin.write(json.dumps(arguments) + "\n")
        self.process.stdin.flush()
        answer = self._read()
        cpu = cpu_seconds(self.pid) - cpu
        return _Generation(
            seconds=answer["seconds"],
            cpu_seconds=cpu,
            other_cpu_seconds=machine_cpu_seconds() - machine - cpu,
            prompt_tokens=answer["usage"]["prompt_tokens"],
            completion_tokens=answer["usage"]["completion_tokens"],
            finish_reason=answer["finish_reason"],
            text=answer["text"],
        )

    def _read(self) -> dict:
        ready, _, _ = select.select([self.process.stdout], [], [], GENERATION_TIMEOUT)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.process.kill()
            raise ServerFailed("bench.llama_direct did not answer; see its log")
        return json.loads(line)


def _logged_speed(log: Path) -> dict:
    """The embedded model's own tokens/s, from its log lines of the completes:
    what its generation loop reaches, without HTTP and GraphQL (median, the
    warm-up left out)."""
    speeds = []
    for line in log.read_text(errors="replace").splitlines():
        if '"local completion"' in line:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("completion_tokens") == COMPLETE_MAX_TOKENS:
                speeds.append(entry["tokens_per_second"])
    if len(speeds) < 2:
        return {}
    return {"model_tokens_per_s": round(statistics.median(speeds[1:]), 1)}


def _generation_row(
    side: str, threads: int, runs: list[_Generation], extra: dict
) -> dict:
    speeds = [run.completion_tokens / run.seconds for run in runs]
    return {
        "variant": f"{side} t={threads}",
        "side": side,
        "threads": threads,
        "concurrency": 1,
        "requests": len(runs),
        "failures": 0,
        **latency_stats([run.seconds for run in runs]),
        "tokens_per_s": round(statistics.median(speeds), 1),
        "tokens_per_s_min": round(min(speeds), 1),
        "tokens_per_s_max": round(max(speeds), 1),
        "server_cpu_ms_per_req": round(
            statistics.mean(run.cpu_seconds for run in runs) * 1000, 1
        ),
        "other_cpu_util": round(
            max(sum(run.other_cpu_seconds for run in runs), 0)
            / sum(run.seconds for run in runs),
            3,
        ),
        "prompt_tokens": sorted({run.prompt_tokens for run in runs}),
        "completion_tokens": sorted({run.completion_tokens for run in runs}),
        "finish_reasons": sorted({run.finish_reason for run in runs}),
        **extra,
    }
