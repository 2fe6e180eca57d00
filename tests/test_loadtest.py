"""The load test: its requests are valid against the schema, its fake
upstream answers all four tasks, its mix covers them with repeats, and (with
Locust installed) a few seconds of `python -m loadtest` run clean.

Locust itself only ever runs in a subprocess: importing it patches the
standard library (gevent) for the whole process.
"""

from __future__ import annotations

import importlib.util
import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx2
import pytest
from starlette.testclient import TestClient

from gptmini_graphql.app import create_app
from loadtest import workload
from loadtest.fake_upstream import app as fake_upstream
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent
FOUR_TASKS = {"summarize", "translate", "analyze", "complete"}
needs_locust = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None,
    reason="Locust is not installed (make loadtest installs it)",
)


def test_the_mix_covers_the_four_tasks_with_repeated_texts() -> None:
    assert set(workload.TASKS) == set(workload.WEIGHTS) == FOUR_TASKS
    assert all(weight > 0 for weight in workload.WEIGHTS.values())
    rng = random.Random(7)
    texts = Counter(workload.pick(workload.ARTICLES, rng) for _ in range(500))
    fresh = sum(count for text, count in texts.items() if "(ref " in text)
    assert 0.1 < fresh / 500 < 0.3  # some texts are new ...
    assert texts[workload.ARTICLES[0]] > 50  # ... and the popular ones repeat
    temperatures = {workload.complete(rng).variables["temperature"] for _ in range(50)}
    assert 0.0 in temperatures  # some completions are cacheable


def test_every_request_of_the_mix_is_answered_through_its_fake_upstream() -> None:
    """The load test's own fake upstream, behind the real app: every task of
    the mix gets a good answer, and a repeat comes from the cache."""
    upstream = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=fake_upstream))
    app = create_app(make_settings(cache_ttl_seconds=60), llm_http_client=upstream)
    with TestClient(app) as client:
        login = client.post(
            "/graphql",
            json={
                "query": workload.LOGIN,
                "variables": {"username": "test_user", "password": "1234"},
            },
        ).json()
        headers = {"Authorization": f"Bearer {login['data']['login']['accessToken']}"}
        rng = random.Random(1)
        seen = Counter()
        for _ in range(40):
            name = rng.choice(sorted(workload.TASKS))
            request = workload.TASKS[name](rng)
            response = client.post("/graphql", json=request.body(), headers=headers)
            body = response.json()
            assert workload.problem(request, response.status_code, body) is None, body
            seen[name] += 1
            seen["cached"] += body["data"][request.field]["cached"]
    assert set(seen) == {*FOUR_TASKS, "cached"}
    assert seen["cached"] > 0


def test_problem_names_what_went_wrong() -> None:
    request = workload.Request("analyze", workload.ANALYZE)
    limited = {"errors": [{"message": "", "extensions": {"code": "RATE_LIMITED"}}]}
    assert workload.problem(request, 200, limited) == "RATE_LIMITED"
    assert workload.problem(request, 502, None) == "HTTP 502"
    assert workload.problem(request, 200, {"data": {"analyze": None}}) == "NO_DATA"
    assert workload.problem(request, 200, {"data": {"analyze": {}}}) == "NO_DATA"


@needs_locust
def test_locust_reads_the_four_tasks_at_their_weights() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            "loadtest/locustfile.py",
            "--show-task-ratio-json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    tasks = json.loads(done.stdout)["per_class"]["APIUser"]["tasks"]
    total = sum(workload.WEIGHTS.values())
    assert {name: task["ratio"] for name, task in tasks.items()} == {
        name: pytest.approx(weight / total) for name, weight in workload.WEIGHTS.items()
    }


@needs_locust
def test_a_short_headless_run_is_clean() -> None:
    """`make loadtest` in small: servers up, Locust for 3 s, its summary, the
    server's metrics, no failure, and everything stopped."""
    done = subprocess.run(
        [sys.executable, "-m", "loadtest", "--users", "3", "--run-time", "3s"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # Locust prints its summary on stderr
        text=True,
        timeout=120,
    )
    out = done.stdout
    assert done.returncode == 0, out
    assert "Aggregated" in out and "Response time percentiles" in out
    assert "Server metrics" in out
    summary = next(line for line in out.splitlines() if "Aggregated" in line)
    assert "0(0.00%)" in summary  # no failures
    outcomes = next(line for line in out.splitlines() if "by outcome" in line)
    assert outcomes.split(": ", 1)[1].startswith("OK ")
