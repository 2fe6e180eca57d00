"""The scenarios `python -m bench` runs, in order. Add one with `@scenario`:
a function of the rig (the servers) and the options, returning result rows.
Rows are dicts; the table shows the columns it knows and the JSON keeps all."""

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.fake_upstream import COMPLETION, STREAM_DELTAS
from bench.load import (
    cpu_seconds,
    http_request,
    latency_stats,
    machine_cpu_seconds,
    measure,
    own_cpu_seconds,
    run,
)
from bench.servers import ROOT, Rig, Server, ServerFailed, http_json, login
from bench.workload import (
    ANALYZE_QUERY,
    COMPLETE_MAX_TOKENS,
    COMPLETE_QUERY,
    LOCAL_CONTEXT_SIZE,
    LOCAL_MODEL_PATH,
    LOGIN_QUERY,
    REVIEW,
    REVIEW_AGAIN,
    STORY,
    STREAM_QUERY,
    SUMMARIZE_QUERY,
    TEXT,
    chat_body,
    complete_messages,
    graphql_body,
    stream_chat_body,
)
from gptmini_graphql.settings import Settings
from tests.model_process import model_processes


@dataclass(frozen=True)
class Options:
    concurrency: tuple[int, ...]
    warmup: float
    duration: float
    quick: bool = False
    # Times the summarize variants are measured, interleaved: on a shared
    # machine, the median of a few rounds is steadier than one window.
    rounds: int = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    run: Callable[[Rig, Options], list[dict]]


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, description: str):
    def register(run: Callable[[Rig, Options], list[dict]]):
        SCENARIOS[name] = Scenario(name, description, run)
        return run

    return register


def _http_load(
    rig: Rig,
    options: Options,
    server: Server,
    request: bytes,
    check: Callable[[bytes], str | None],
    *,
    concurrency: tuple[int, ...] | None = None,
    first: Callable[[bytes], bool] | None = None,
) -> list[dict]:
    """The same request at each concurrency (the options' unless given); CPU of
    the server, the upstream behind it (if another process) and this load
    generator. `first`: a stream's first event, for time to first token."""
    cpu = {"server": server.cpu_seconds}
    upstream = rig.upstream()
    if upstream is not server:
        cpu["upstream"] = upstream.cpu_seconds
    cpu["client"] = own_cpu_seconds
    return [
        run(
            measure(
                port=server.port,
                request=request,
                concurrency=level,
                warmup=options.warmup,
                duration=options.duration,
                check=check,
                cpu=cpu,
                first=first,
            )
        )
        for level in concurrency or options.concurrency
    ]


def _json_check(key: str) -> Callable[[bytes], str | None]:
    def check(body: bytes) -> str | None:
        try:
            answer = json.loads(body)
        except ValueError:
            return f"not JSON: {body[:200]!r}"
        if "errors" in answer:
            return f"errors: {answer['errors']!r}"[:300]
        if key not in answer:
            return f"no {key!r}: {body[:200]!r}"
        return None

    return check


@scenario("direct", "the chat completion sent to the fake upstream directly (floor)")
def direct(rig: Rig, options: Options) -> list[dict]:
    upstream = rig.upstream()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    request = http_request(
        "POST", "/v1/chat/completions", upstream.port, chat_body(TEXT), headers
    )
    return _http_load(rig, options, upstream, request, _json_check("choices"))


@scenario("baseline", "bare Starlette + openai SDK, same upstream call (reference)")
def baseline(rig: Rig, options: Options) -> list[dict]:
    server = rig.baseline()
    body = json.dumps({"text": TEXT}).encode()
    headers = {"Content-Type": "application/json"}
    request = http_request("POST", "/summarize", server.port, body, headers)
    return _http_load(rig, options, server, request, _json_check("text"))


@scenario(
    "summarize",
    "authenticated summarize through our server (GraphQL): a cache miss "
    "(Cache-Control: no-store: always to the upstream) with an access token "
    "(miss) and with an API key (miss-key), and a cache hit; with --before REF, "
    "the miss on that commit's server too (miss-before)",
)
def summarize(rig: Rig, options: Options) -> list[dict]:
    server = rig.api()
    body = graphql_body(SUMMARIZE_QUERY, {"text": TEXT})
    # no-store: every request goes upstream (no-cache would let concurrent
    # identical requests share one call, which is the cache working).
    miss = {"Cache-Control": "no-store"}
    variants = [
        ("miss", server, rig.token, miss),
        ("miss-key", server, rig.api_key, miss),
        ("hit", server, rig.token, {}),
    ]
    if rig.before_ref:
        variants.insert(0, ("miss-before", rig.before(), rig.before_token, miss))
    rows = []
    # Every variant at one concurrency before the next: a variant measured
    # right after a 64-way run of the same server would pay for its heap.
    for round_ in range(1, options.rounds + 1):
        # Each round starts one variant later: none always runs first, or
        # always just after switching from the other server.
        shift = (round_ - 1) % len(variants)
        ordered = variants[shift:] + variants[:shift]
        for level in options.concurrency:
            for variant, target, credential, extra in ordered:
                headers = {
                    "Content-Type": "application/json",
                    "Authorization": f"Bearer {credential}",
                    **extra,
                }
                request = http_request("POST", "/graphql", target.port, body, headers)
                rows += [
                    {"variant": variant, **row}
                    | ({"round": round_} if options.rounds > 1 else {})
                    for row in _http_load(
                        rig,
                        options,
                        target,
                        request,
                        _summary_check,
                        concurrency=(level,),
                    )
                ]
    return rows


def _summary_check(body: bytes) -> str | None:
    """No GraphQL errors, and the answer came from the fake upstream."""
    if problem := _json_check("data")(body):
        return problem
    summary = (json.loads(body)["data"] or {}).get("summarize") or {}
    if summary.get("model") != COMPLETION["model"]:
        return f"not the fake upstream's answer: {body[:200]!r}"
    return None


@scenario(
    "spend",
    "budgets and the ledger: CPU per summarize (a miss) with the ledger only, "
    "with budgets in memory and in Redis (and the --before server); then two "
    "replicas sharing Redis and a database, a budget of k worst-case calls and "
    "20k concurrent calls: admitted, refused, ledger rows, over-spend",
)
def spend(rig: Rig, options: Options) -> list[dict]:
    from bench import spend as spend_bench

    rows = spend_bench.micro_rows()
    rows += spend_bench.cpu_rows(rig, options, _http_load, _summary_check)
    return [*rows, spend_bench.proof_row(options)]


# --- login (issue 13) -----------------------------------------------------

LOGIN_CASES = {
    # variant: (username, password, expected outcome)
    "ok": ("test_user", "1234", "ok"),
    "wrong-password": ("test_user", "not-the-password", "UNAUTHENTICATED"),
    "unknown-user": ("nobody-at-all", "1234", "UNAUTHENTICATED"),
    "disabled-user": ("bench-disabled", "a-good-long-password", "UNAUTHENTICATED"),
}


@scenario(
    "login",
    "login's latency and CPU for a good login, a wrong password, an unknown user "
    "and a disabled user: the three refusals should not be told apart by time",
)
def login_timing(rig: Rig, options: Options) -> list[dict]:
    server = rig.api()
    admin = {"Content-Type": "application/json", "Authorization": f"Bearer {rig.token}"}
    for query in (
        'mutation { createUser(username: "bench-disabled", '
        'password: "a-good-long-password") { id } }',
        'mutation { updateUser(username: "bench-disabled", disabled: true) { id } }',
    ):
        status, answer = http_json(
            server.port, "POST", "/graphql", graphql_body(query, {}), admin
        )
        if status != 200 or (answer.get("errors") and "exists" not in str(answer)):
            raise ServerFailed(f"setting up the login scenario: {answer}")
    rows = []
    for variant, (username, password, expected) in LOGIN_CASES.items():
        body = graphql_body(LOGIN_QUERY, {"username": username, "password": password})
        headers = {"Content-Type": "application/json"}
        request = http_request("POST", "/graphql", server.port, body, headers)
        rows += [
            {"variant": variant, **row}
            for row in _http_load(
                rig, options, server, request, _login_check(expected), concurrency=(1,)
            )
        ]
    return rows


def _login_check(expected: str) -> Callable[[bytes], str | None]:
    def check(body: bytes) -> str | None:
        answer = json.loads(body)
        codes = [e["extensions"]["code"] for e in answer.get("errors") or []]
        outcome = codes[0] if codes else "ok"
        return None if outcome == expected else f"{outcome}, not {expected}"

    return check


# --- streaming (issue 4) -----------------------------------------------------

STREAM_MAX_CONCURRENCY = 16


@scenario(
    "stream",
    "completeStream over SSE vs the same stream read from the fake upstream "
    "directly: time to first token (ttft) and CPU per stream",
)
def stream(rig: Rig, options: Options) -> list[dict]:
    levels = tuple(
        sorted({min(c, STREAM_MAX_CONCURRENCY) for c in options.concurrency})
    )
    upstream = rig.upstream()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    request = http_request(
        "POST", "/v1/chat/completions", upstream.port, stream_chat_body(STORY), headers
    )
    direct = _http_load(
        rig,
        options,
        upstream,
        request,
        _openai_stream_check,
        concurrency=levels,
        first=_openai_delta,
    )
    server = rig.api()
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "Authorization": f"Bearer {rig.token}",
    }
    body = graphql_body(STREAM_QUERY, {"prompt": STORY})
    request = http_request("POST", "/graphql", server.port, body, headers)
    ours = _http_load(
        rig,
        options,
        server,
        request,
        _graphql_stream_check,
        concurrency=levels,
        first=_graphql_delta,
    )
    return [{"variant": "direct", "side": "direct", **row} for row in direct] + [
        {"variant": "ours", "side": "ours", **row} for row in ours
    ]


def _sse_data(body: bytes) -> list[dict]:
    """The JSON of each `data:` line (one event per line in both streams), but
    for OpenAI's `[DONE]` and graphql-sse's empty `complete`."""
    events = []
    for line in body.splitlines():
        if line.startswith(b"data: ") and line[6:].strip() not in (b"", b"[DONE]"):
            events.append(json.loads(line[6:]))
    return events


def _openai_delta(chunk: bytes) -> bool:
    return any(
        event.get("choices") and event["choices"][0]["delta"].get("content")
        for event in _sse_data(chunk)
    )


def _graphql_delta(chunk: bytes) -> bool:
    return any(
        ((event.get("data") or {}).get("completeStream") or {}).get("text")
        for event in _sse_data(chunk)
    )


def _openai_stream_check(body: bytes) -> str | None:
    deltas = sum(_openai_delta(line) for line in body.splitlines())
    if deltas != STREAM_DELTAS or not body.endswith(b"data: [DONE]\n\n"):
        return f"{deltas} deltas, not {STREAM_DELTAS} and [DONE]: {body[-200:]!r}"
    return None


def _graphql_stream_check(body: bytes) -> str | None:
    """Every delta in order, then a last event with the upstream's usage."""
    try:
        events = [event["data"]["completeStream"] for event in _sse_data(body)]
    except (ValueError, KeyError, TypeError):
        return f"not completeStream events: {body[:300]!r}"
    expected = COMPLETION["choices"][0]["message"]["content"]
    text = "".join(event["text"] for event in events)
    last = events[-1] if events else {}
    if (
        not body.endswith(b"event: complete\r\ndata: \r\n\r\n")
        or len(events) != STREAM_DELTAS + 1
        or text != expected
        or not last.get("done")
        or (last.get("usage") or {}).get("completionTokens") != STREAM_DELTAS
    ):
        return f"unexpected stream: {body[-300:]!r}"
    return None


# --- the embedded model (issue 3) ------------------------------------------

READY_TIMEOUT = 60.0  # seconds for the model to load
GENERATION_TIMEOUT = 60.0  # seconds for one completion


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
            direct_extra = {"load_s": direct.load_s, **_memory(direct.pid, "after")}
        ours_extra |= _memory(server.process.pid, "after")
        ours_extra |= _memory(_model_pid(server), "model")
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
    loaded = _memory(server.process.pid, "loaded")
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


def _memory(pid: int, when: str) -> dict:
    """Resident memory (MiB) from /proc: all, anonymous, and file-backed (the
    mmap-ed model file's pages in use)."""
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
