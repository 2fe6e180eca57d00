"""Knowing the upstream: its model list at start and on /readyz, and warnings
when the configured model or its price cannot be right."""

from __future__ import annotations

import json
import os

import pytest

from tests.fake_upstream import Reply

LOOPBACK = "http://127.0.0.1:8001/v1"


def warning_records(capfd: pytest.CaptureFixture) -> list[dict]:
    lines = capfd.readouterr().err.splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [record for record in records if record["level"] == "WARNING"]


def warnings_logged(capfd: pytest.CaptureFixture) -> list[str]:
    return [record["message"] for record in warning_records(capfd)]


def test_readyz_says_what_the_upstream_serves(make_api) -> None:
    api = make_api()
    body = api.client.get("/readyz").json()
    assert body == {
        "status": "ready",
        "model": "gpt-4o-mini",
        "upstreams": [
            {
                "name": "primary",
                "model": "gpt-4o-mini",
                "listed": True,
                "served": ["gpt-4o-mini"],
                "servedCount": 1,
            }
        ],
        "warnings": [],
    }


def test_a_model_the_server_does_not_list_is_a_warning(
    make_api, upstream, capfd: pytest.CaptureFixture
) -> None:
    upstream.models = ["models/SmolLM2-135M-Instruct.Q4_1.gguf"]
    api = make_api(openai_model="no-such-model")
    response = api.client.get("/readyz")
    # Ready: servers that answer any name would otherwise never be (see probe.py).
    assert response.status_code == 200
    body = response.json()
    assert body["upstreams"][0]["listed"] is False
    (warning,) = body["warnings"]
    assert "does not list the configured model 'no-such-model'" in warning
    assert "SmolLM2-135M-Instruct" in warning
    assert warning in warnings_logged(capfd)


@pytest.mark.skipif(
    os.environ.get("FAKE_UPSTREAM") == "http",
    reason="an IP address is not resolved: over HTTP it cannot reach the fake",
)
def test_an_openai_price_on_a_loopback_url_is_a_warning(
    make_api, upstream, capfd: pytest.CaptureFixture
) -> None:
    upstream.models = ["smollm2"]
    api = make_api(openai_base_url=LOOPBACK, openai_api_key=None)
    price, listed = api.client.get("/readyz").json()["warnings"]
    assert "MODEL_PRICES prices gpt-4o-mini at $0.15 / $0.6 per 1M tokens" in price
    assert "its base URL is a local address" in price
    assert "127.0.0.1" not in price  # /readyz is no place for internal addresses
    assert "OPENAI_MODEL" in price
    # Not listed either: its answers would be priced as gpt-4o-mini.
    assert listed.endswith("reported and priced as gpt-4o-mini.")
    logged = {record["message"]: record for record in warning_records(capfd)}
    assert {price, listed} <= set(logged)
    assert logged[price]["url"] == "http://127.0.0.1:8001/v1/"  # the log says where


@pytest.mark.parametrize(
    "settings",
    [
        {"openai_model": "smollm2"},  # no price: cost null, nothing invented
        {"model_prices": {"smollm2": {"input": 0, "output": 0}}},
    ],
)
def test_a_free_or_unpriced_local_model_is_not_a_warning(
    make_api, upstream, settings: dict
) -> None:
    upstream.models = ["smollm2"]
    overrides = {"openai_base_url": LOOPBACK, "openai_model": "smollm2", **settings}
    assert make_api(**overrides).client.get("/readyz").json()["warnings"] == []


def test_a_server_without_a_model_list_is_ready(
    make_api, upstream, capfd: pytest.CaptureFixture
) -> None:
    upstream.models = None
    body = make_api().client.get("/readyz").json()
    assert body["status"] == "ready"
    assert body["upstreams"][0] == {
        "name": "primary",
        "model": "gpt-4o-mini",
        "listed": None,
        "error": "HTTP 404",
    }
    assert "could not list the upstream's models" in warnings_logged(capfd)


def test_a_model_list_that_is_not_json_is_a_failed_probe(
    make_api, upstream, capfd: pytest.CaptureFixture
) -> None:
    # A proxy's error page, labelled as JSON.
    upstream.models_reply = Reply(
        raw=b"<html><body>502 Bad Gateway</body></html>",
        headers={"content-type": "application/json"},
    )
    # It starts (the probe at start-up failed, and said so), and /readyz asks
    # again each time.
    api = make_api(llm_models_cache_seconds=0)
    response = api.client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["upstreams"][0] == {
        "name": "primary",
        "model": "gpt-4o-mini",
        "listed": None,
        "error": "not JSON",
    }
    err = capfd.readouterr().err
    assert "Traceback" not in err
    records = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    failures = [
        record
        for record in records
        if record["message"] == "could not list the upstream's models"
    ]
    assert failures and all(
        record["level"] == "WARNING" and record["error"] == "not JSON"
        for record in failures
    )


def test_the_list_is_asked_for_at_start_then_reused(make_api, upstream) -> None:
    api = make_api()
    assert upstream.model_listings == 1
    for _ in range(3):
        api.client.get("/readyz")
    assert upstream.model_listings == 1


def test_readyz_asks_again_once_the_list_is_old(make_api, upstream) -> None:
    api = make_api(llm_models_cache_seconds=0)
    upstream.models = ["other-model"]
    assert api.client.get("/readyz").json()["upstreams"][0]["listed"] is False
    upstream.models = ["gpt-4o-mini"]
    assert api.client.get("/readyz").json()["upstreams"][0]["listed"] is True
    assert upstream.model_listings == 3


def test_the_fallback_is_probed_too(make_api, upstream) -> None:
    upstream.models = ["gpt-4o-mini"]
    api = make_api(
        llm_fallback_base_url="http://fallback.test/v1",
        llm_fallback_model="backup-model",
    )
    body = api.client.get("/readyz").json()
    assert [(u["name"], u["listed"]) for u in body["upstreams"]] == [
        ("primary", True),
        ("fallback", False),
    ]
    assert "'backup-model'" in body["warnings"][0]


@pytest.mark.parametrize(
    ("base_url", "warned"),
    [
        ("http://localhost:11434/v1", True),
        ("http://[::1]:8000/v1", True),
        ("http://10.1.2.3/v1", True),
        ("http://192.168.0.7:8000/v1", True),
        ("http://gpu-box.local/v1", True),
        ("https://api.openai.com/v1", False),
        ("https://openrouter.ai/api/v1", False),
    ],
)
def test_which_addresses_count_as_local(make_api, base_url: str, warned: bool) -> None:
    warnings = (
        make_api(openai_base_url=base_url).client.get("/readyz").json()["warnings"]
    )
    assert any("is a local address" in warning for warning in warnings) is warned


def test_ollama_lists_a_bare_name_with_its_tag(make_api, upstream) -> None:
    upstream.models = ["llama3.1:latest"]
    body = make_api(openai_model="llama3.1").client.get("/readyz").json()
    assert body["upstreams"][0]["listed"] is True
