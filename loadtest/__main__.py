"""`make loadtest`: the server (with uvicorn workers) against a local fake
upstream, Locust headless for a bounded time, Locust's summary, and what the
server's /metrics counted meanwhile.

    python -m loadtest [--users 20] [--spawn-rate 10] [--run-time 30s] [--workers 2]

Everything listens on 127.0.0.1 and stops at the end. The server runs with
its own settings (not a developer's .env): rate limits high enough that the
one load-test user is never refused, the response cache in memory (each
worker its own), metrics in multiprocess mode.
"""

from __future__ import annotations

import argparse
import http.client
import re
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench.servers import Server, uvicorn_argv

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest")
    parser.add_argument("--users", type=int, default=20, help="simulated users")
    parser.add_argument(
        "--spawn-rate", type=float, default=10, help="users started per second"
    )
    parser.add_argument("--run-time", default="30s", help="e.g. 30s, 2m (at most 1h)")
    parser.add_argument(
        "--workers", type=int, default=2, help="uvicorn worker processes"
    )
    args = parser.parse_args(argv)
    seconds = run_seconds(args.run_time)
    if not 0 < seconds <= 3600:
        parser.error("--run-time must be between 1s and 1h")

    with tempfile.TemporaryDirectory(prefix="gptmini-loadtest-") as folder:
        tmp = Path(folder)
        upstream = Server(
            "upstream",
            [*uvicorn_argv("loadtest.fake_upstream:app"), "--lifespan", "off"],
            tmp / "upstream.log",
        )
        try:
            api = Server(
                "api",
                api_argv(args.workers),
                tmp / "api.log",
                env=api_env(upstream.url, tmp),
                cwd=tmp,
            )
            try:
                print(
                    f"Load test: {args.users} users for {args.run_time} against "
                    f"{api.url} ({args.workers} workers) and a fake upstream",
                    flush=True,
                )
                locust = subprocess.run(  # noqa: S603 - our own argv, no shell
                    locust_argv(args, api.url), cwd=ROOT, timeout=seconds + 120
                )
                print(server_report(api.port), flush=True)
            finally:
                api.stop()
        finally:
            upstream.stop()
    return locust.returncode


def run_seconds(text: str) -> float:
    """Locust's --run-time: 30, 30s, 2m, 1h30m."""
    if text.isdigit():
        return float(text)
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    if not parts or not any(parts.groups()):
        raise SystemExit(f"not a run time: {text!r}")
    hours, minutes, secs = (int(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def locust_argv(args: argparse.Namespace, host: str) -> list[str]:
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", host, "--users", str(args.users),
        "--spawn-rate", str(args.spawn_rate), "--run-time", args.run_time,
        "--stop-timeout", "5", "--only-summary", "--loglevel", "WARNING",
    ]  # fmt: skip


def api_argv(workers: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "--factory", "gptmini_graphql.app:create_app",
        "--host", "127.0.0.1", "--port", "{port}", "--workers", str(workers),
        "--no-access-log",
    ]  # fmt: skip


def api_env(upstream_url: str, tmp: Path) -> dict[str, str | None]:
    metrics = tmp / "metrics"
    metrics.mkdir()
    return {
        "ENVIRONMENT": "development",
        "LLM_BACKEND": "openai",
        "OPENAI_API_KEY": "sk-loadtest",
        "OPENAI_BASE_URL": upstream_url + "/v1",
        "RATE_LIMIT": "1000000/minute",
        "LOGIN_RATE_LIMIT": "100000/minute",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        # None removes a variable: nothing of the developer's own set-up.
        "REDIS_URL": None,
        "DATABASE_URL": None,
        "OTEL_EXPORTER_OTLP_ENDPOINT": None,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": None,
    }


def server_report(port: int) -> str:
    """What /metrics counted, in a few lines."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    totals: dict[str, defaultdict[tuple[tuple[str, str], ...], float]] = defaultdict(
        lambda: defaultdict(float)
    )
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name][tuple(sorted(sample.labels.items()))] += sample.value

    def total(name: str, **labels: str) -> float:
        return sum(
            value
            for key, value in totals[name].items()
            if all((label, want) in key for label, want in labels.items())
        )

    def by(name: str, label: str) -> str:
        counts: defaultdict[str, float] = defaultdict(float)
        for key, value in totals[name].items():
            counts[dict(key).get(label, "")] += value
        return ", ".join(f"{k} {v:g}" for k, v in sorted(counts.items()) if v) or "none"

    calls = total("gptmini_upstream_request_duration_seconds_count")
    upstream_ms = (
        1000 * total("gptmini_upstream_request_duration_seconds_sum") / (calls or 1)
    )
    hits = total("gptmini_cache_requests_total", result="hit")
    coalesced = total("gptmini_cache_requests_total", result="coalesced")
    misses = total("gptmini_cache_requests_total", result="miss")
    lookups = hits + coalesced + misses
    graphql = total("gptmini_http_requests_total", route="/graphql")
    graphql_seconds = total(
        "gptmini_http_request_duration_seconds_sum", route="/graphql"
    )
    return "\n".join(
        [
            "Server metrics (/metrics, all workers together):",
            f"  /graphql requests: {graphql:g},"
            f" mean {1000 * graphql_seconds / (graphql or 1):.1f} ms",
            f"  HTTP responses by status: {by('gptmini_http_requests_total', 'status')}",
            f"  operations by outcome: {by('gptmini_graphql_operations_total', 'outcome')}",
            f"  operations by field: {by('gptmini_graphql_operations_total', 'operation')}",
            f"  upstream calls: {calls:g}, mean {upstream_ms:.1f} ms;"
            f" by outcome: {by('gptmini_upstream_request_duration_seconds_count', 'outcome')}",
            f"  response cache: {hits:g} hits, {coalesced:g} coalesced, {misses:g} misses"
            f" ({(hits + coalesced) / (lookups or 1):.0%} answered without the model)",
            f"  tokens: {by('gptmini_llm_tokens_total', 'kind')};"
            f" cost ${total('gptmini_llm_cost_usd_total'):.4f},"
            f" saved by the cache ${total('gptmini_cache_saved_cost_usd_total'):.4f}",
            f"  rate-limit refusals: {total('gptmini_rate_limit_refusals_total'):g}",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
