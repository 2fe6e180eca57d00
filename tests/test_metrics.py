"""GET /metrics after known sequences of requests: the counters moved by
exactly what those requests did.

Each app has its own metrics; the tests read them before and after a
sequence all the same and check the difference.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gptmini_graphql import __version__
from gptmini_graphql.metrics import Metrics, upstream_outcome
from tests.conftest import API, error_codes
from tests.fake_upstream import MODEL_SNAPSHOT, Reply, api_error
from tests.test_subscriptions import CHUNKS, stream_over_http

ROOT = Path(__file__).resolve().parent.parent
SUMMARIZE = "query($t: String!) { summarize(text: $t) { text cached } }"
ANALYZE = "query($t: String!) { analyze(text: $t) { sentiment } }"
# The fake upstream's usage: 100 prompt and 20 completion tokens an answer,
# at gpt-4o-mini's $0.15 / $0.60 per 1M tokens.
ANSWER_COST = (100 * 0.15 + 20 * 0.60) / 1e6


class Scrape:
    """One reading of /metrics: sample values by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, frozenset(sample.labels.items()))
                self.samples[key] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


def scrape(api: API) -> Scrape:
    response = api.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return Scrape(response.text)


class Delta:
    """How much each sample moved between two readings."""

    def __init__(self, before: Scrape, after: Scrape) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        return self.after.value(name, **labels) - self.before.value(name, **labels)

    def requests(self, method: str, route: str, status: str) -> float:
        return self(
            "gptmini_http_requests_total", method=method, route=route, status=status
        )

    def operations(self, operation: str, outcome: str) -> float:
        return self(
            "gptmini_graphql_operations_total", operation=operation, outcome=outcome
        )

    def tokens(self, kind: str) -> float:
        return self("gptmini_llm_tokens_total", model=MODEL_SNAPSHOT, kind=kind)

    def calls(
        self, outcome: str = "ok", stream: str = "false", sample: str = "count"
    ) -> float:
        """Calls to the tests' upstream (`sample="sum"`: their seconds)."""
        return self(
            f"gptmini_upstream_request_duration_seconds_{sample}",
            upstream="primary",
            model="gpt-4o-mini",
            outcome=outcome,
            stream=stream,
        )


@pytest.mark.usefixtures("clear_of_a_minute_edge")
def test_a_known_sequence_of_requests_shows_in_the_counters(
    make_api: Callable[..., API],
) -> None:
    api = make_api(cache_ttl_seconds=60, rate_limit="3/minute")
    before = scrape(api)

    token = api.login()
    first = api.post(SUMMARIZE, {"t": "metrics text one"}, token)
    again = api.post(SUMMARIZE, {"t": "metrics text one"}, token)
    assert (
        first["data"]["summarize"]["cached"],
        again["data"]["summarize"]["cached"],
    ) == (False, True)
    assert "errors" not in api.post(ANALYZE, {"t": "metrics text two"}, token)
    refused = api.post(ANALYZE, {"t": "metrics text three"}, token)  # the 4th field
    assert error_codes(refused) == ["RATE_LIMITED"]
    assert error_codes(api.post(SUMMARIZE, {"t": "anyone"})) == ["UNAUTHENTICATED"]
    assert error_codes(api.post("query { summarize(")) == ["GRAPHQL_PARSE_FAILED"]
    assert api.client.get("/healthz").status_code == 200
    assert api.client.get("/no/such/page").status_code == 404

    after = scrape(api)
    delta = Delta(before, after)
    # HTTP: by route template and status; a 404 is not labelled by its path.
    assert delta.requests("POST", "/graphql", "200") == 7
    assert delta.requests("GET", "/healthz", "200") == 1
    assert delta.requests("GET", "unmatched", "404") == 1
    assert delta.requests("GET", "/metrics", "200") == 1
    timed = delta(
        "gptmini_http_request_duration_seconds_count", method="POST", route="/graphql"
    )
    assert timed == 7
    assert "/no/such/page" not in after.text
    assert after.value("gptmini_http_requests_in_flight") == 1  # the scrape itself
    # Operations: by root field and outcome.
    assert delta.operations("login", "OK") == 1
    assert delta.operations("summarize", "OK") == 2
    assert delta.operations("analyze", "OK") == 1
    assert delta.operations("analyze", "RATE_LIMITED") == 1
    assert delta.operations("summarize", "UNAUTHENTICATED") == 1
    assert delta.operations("none", "GRAPHQL_PARSE_FAILED") == 1
    timed = delta(
        "gptmini_graphql_operation_duration_seconds_count", operation="summarize"
    )
    assert timed == 3
    # The upstream: two calls (the repeat was a cache hit), timed.
    assert delta.calls() == 2
    assert delta.calls(sample="sum") > 0
    assert after.value("gptmini_upstream_requests_in_flight", upstream="primary") == 0
    assert len(api.upstream.requests) == 2
    # Tokens and cost by the model that answered; what the hit saved.
    assert (delta.tokens("input"), delta.tokens("output")) == (200, 40)
    spent = delta("gptmini_llm_cost_usd_total", model=MODEL_SNAPSHOT)
    saved = delta("gptmini_cache_saved_cost_usd_total", model=MODEL_SNAPSHOT)
    assert (spent, saved) == (
        pytest.approx(2 * ANSWER_COST),
        pytest.approx(ANSWER_COST),
    )
    # The cache and the rate limit.
    assert delta("gptmini_cache_requests_total", result="hit") == 1
    assert delta("gptmini_cache_requests_total", result="miss") == 2
    assert delta("gptmini_cache_requests_total", result="coalesced") == 0
    assert delta("gptmini_rate_limit_refusals_total", limit="user") == 1


def test_upstream_failures_are_timed_by_outcome(make_api: Callable[..., API]) -> None:
    api = make_api(llm_timeout_seconds=0.5)
    token = api.login()
    before = scrape(api)
    api.upstream.queue(
        api_error(503, "down"),
        Reply(error=httpx2.ConnectError("refused")),
        Reply(delay=2),
    )
    codes = [
        error_codes(api.post(SUMMARIZE, {"t": f"failing {n}"}, token)) for n in range(3)
    ]
    assert codes == [
        ["UPSTREAM_UNAVAILABLE"],
        ["UPSTREAM_UNAVAILABLE"],
        ["UPSTREAM_TIMEOUT"],
    ]

    delta = Delta(before, scrape(api))
    for outcome in ("503", "connection_error", "timeout"):
        assert delta.calls(outcome) == 1, outcome
    assert delta.operations("summarize", "UPSTREAM_UNAVAILABLE") == 2
    assert delta.operations("summarize", "UPSTREAM_TIMEOUT") == 1
    assert delta.tokens("input") == 0


def test_a_stream_counts_its_first_token_tokens_and_outcome(
    make_api: Callable[..., API],
) -> None:
    api = make_api()
    token = api.login()
    before = scrape(api)
    events = stream_over_http(api, "sse", token, Reply(chunks=CHUNKS))
    assert events[-1]["data"]["completeStream"]["done"] is True

    after = scrape(api)
    delta = Delta(before, after)
    field = {"field": "completeStream"}
    assert delta("gptmini_graphql_subscriptions_total", outcome="OK", **field) == 1
    assert delta("gptmini_graphql_time_to_first_token_seconds_count", **field) == 1
    assert after.value("gptmini_graphql_subscriptions_active", **field) == 0
    assert delta.calls(stream="true") == 1
    assert after.value("gptmini_upstream_requests_in_flight", upstream="primary") == 0
    # The fake upstream's stream usage: 10 prompt tokens, one per chunk.
    assert (delta.tokens("input"), delta.tokens("output")) == (10, len(CHUNKS))
    # A subscription is not also counted as a query or mutation.
    assert delta.operations("completeStream", "OK") == 0


def test_refusals_before_routing_are_counted_under_their_route(
    make_api: Callable[..., API],
) -> None:
    api = make_api(max_body_bytes=1024)
    before = scrape(api)
    response = api.client.post("/graphql", json={"query": "x" * 4000})
    assert response.status_code == 413
    delta = Delta(before, scrape(api))
    assert delta.requests("POST", "/graphql", "413") == 1


def test_login_refusals_are_counted_by_limit(make_api: Callable[..., API]) -> None:
    api = make_api(login_rate_limit="1/day")
    before = scrape(api)
    api.login()
    with pytest.raises(AssertionError):
        api.login()
    delta = Delta(before, scrape(api))
    assert delta("gptmini_rate_limit_refusals_total", limit="login-address") == 1
    assert delta.operations("login", "RATE_LIMITED") == 1


def test_label_values_stay_bounded() -> None:
    metrics = Metrics(["summarize", "analyze"])
    # Root fields the schema does not have, a mix, and nothing at all.
    assert metrics.operation_label({"summarize": 2}) == "summarize"
    assert metrics.operation_label({"summarize": 1, "analyze": 1}) == "multiple"
    assert metrics.operation_label({"no_such_field": 1}) == "other"
    assert metrics.operation_label({}) == "none"
    # An upstream naming a new model on every answer cannot grow the series.
    labels = {metrics.model_label(f"model-{n}") for n in range(100)}
    assert "other" in labels and len(labels) <= 33
    # Methods are a fixed set; outcomes look like codes.
    assert upstream_outcome(None) == "ok"
    assert upstream_outcome(TimeoutError()) == "timeout"


def test_two_apps_in_one_process_count_apart(make_api: Callable[..., API]) -> None:
    one, two = make_api(), make_api()
    one.login()
    assert (
        scrape(one).value(
            "gptmini_graphql_operations_total", operation="login", outcome="OK"
        )
        == 1
    )
    assert (
        scrape(two).value(
            "gptmini_graphql_operations_total", operation="login", outcome="OK"
        )
        == 0
    )


def test_metrics_carry_no_user(api: API) -> None:
    """Whatever a user sends ends up in no metric: not their name, token or
    text, and no label is named for them."""
    token = api.login()
    text = "a secret text of the user's own"
    assert "errors" not in api.post(SUMMARIZE, {"t": text}, token)
    api.post(ANALYZE, {"t": text})  # unauthenticated
    api.client.get("/no/such/path/of/the/user")
    exposition = scrape(api).text
    for secret in ("test_user", token, text, "/no/such"):
        assert secret not in exposition
    families = [
        family
        for family in text_string_to_metric_families(exposition)
        if not family.name.startswith(("process_", "python_"))
    ]
    assert families, "no metrics found"
    for family in families:
        assert family.name.startswith("gptmini_"), family.name
        for sample in family.samples:
            banned = {"user", "username", "token", "text", "path"}
            assert not banned & set(sample.labels), sample


# --- the Grafana dashboard -------------------------------------------------------

DASHBOARD = ROOT / "deploy" / "grafana" / "gptmini-graphql.json"
_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def test_the_dashboard_charts_only_metrics_that_exist() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = _exposed_names()
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    assert len(exprs) >= 12
    used = {name for expr in exprs for name in re.findall(r"gptmini_[a-z_]+", expr)}
    unknown = {name for name in used if name not in exposed}
    assert not unknown, unknown
    # Every metric the server exports is on the dashboard somewhere.
    charted = {_family(name) for name in used}
    assert {_family(name) for name in exposed} - charted - {
        "gptmini_build_info"
    } == set()


def _exposed_names() -> set[str]:
    from prometheus_client import generate_latest

    names = set()
    exposed = generate_latest(Metrics().registry).decode()
    for family in text_string_to_metric_families(exposed):
        if family.name.startswith("gptmini_"):
            base = family.name
            names.add(base)
            names.update(base + suffix for suffix in _SUFFIXES)
    return names


def _family(name: str) -> str:
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


# --- several worker processes ------------------------------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from starlette.testclient import TestClient
    from gptmini_graphql.app import create_app
    from tests.conftest import API, make_settings
    from tests.fake_upstream import FakeUpstream

    upstream = FakeUpstream()
    app = create_app(make_settings(), llm_http_client=upstream.http_client())
    with TestClient(app) as client:
        api = API(client, upstream)
        token = api.login()
        for n in range(int(sys.argv[1])):
            api.post("query { analyze(text: \\"worker\\") { sentiment } }", token=token)
        if len(sys.argv) > 2:
            sys.stdout.write(client.get("/metrics").text)
    """
)


def test_several_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """Two worker processes write their counts to PROMETHEUS_MULTIPROC_DIR;
    /metrics, answered by a third, shows the sum."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)

    def worker(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", WORKER, *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    worker("2")
    worker("3")
    text = worker("0", "scrape")
    after = Scrape(text)
    # Two logins and five operations by the first two, one login by the third.
    assert (
        after.value(
            "gptmini_graphql_operations_total", operation="analyze", outcome="OK"
        )
        == 5
    )
    assert (
        after.value("gptmini_graphql_operations_total", operation="login", outcome="OK")
        == 3
    )
    assert (
        after.value(
            "gptmini_upstream_request_duration_seconds_count",
            upstream="primary",
            model="gpt-4o-mini",
            outcome="ok",
            stream="false",
        )
        == 5
    )
    # Live gauges of the workers that exited are gone; the scraping one is in flight.
    assert after.value("gptmini_http_requests_in_flight") == 1
    assert after.value("gptmini_build_info", version=__version__) == 1
    assert "process_cpu_seconds_total" not in text
