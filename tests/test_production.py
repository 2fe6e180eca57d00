"""ENVIRONMENT=production: no development secrets, no introspection or
GraphiQL unless asked for."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gptmini_graphql.app import create_app
from gptmini_graphql.settings import InsecureSettings
from tests.conftest import error_codes, make_settings

SECURE = {
    "environment": "production",
    "jwt_secret": "k" * 40,
    "fake_password": "a long and private passphrase",
}


@pytest.mark.parametrize(
    ("overrides", "names"),
    [
        ({"jwt_secret": None}, ["JWT_SECRET"]),
        ({"jwt_secret": "short-secret"}, ["JWT_SECRET", "32"]),
        ({"fake_password": None}, ["FAKE_PASSWORD"]),
        ({"jwt_secret": None, "fake_password": None}, ["JWT_SECRET", "FAKE_PASSWORD"]),
    ],
)
def test_production_refuses_development_secrets(
    overrides: dict, names: list[str]
) -> None:
    values = {key: value for key, value in {**SECURE, **overrides}.items() if value}
    with pytest.raises(InsecureSettings) as refusal:
        create_app(make_settings(**values))
    for name in names:
        assert name in str(refusal.value)


def test_the_serve_command_says_which_setting_to_fix(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gptmini_graphql", "serve"],
        cwd=tmp_path,
        env={"ENVIRONMENT": "production", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "JWT_SECRET" in result.stderr and "FAKE_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr


def test_development_starts_with_defaults_and_warns(capfd, make_api) -> None:
    make_api()
    assert "development mode: JWT_SECRET" in capfd.readouterr().err


def test_production_hides_introspection(make_api) -> None:
    api = make_api(**SECURE)
    result = api.client.post(
        "/graphql", json={"query": "{ __schema { types { name } } }"}
    )
    assert set(error_codes(result.json())) == {"GRAPHQL_VALIDATION_FAILED"}


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        ("{ summarise }", None),  # a field
        ('{ summarize(txt: "x") { text } }', None),  # an argument
        ("{ ... on Quer { __typename } }", None),  # a type in a fragment
        ("query($t: Strin!) { summarize(text: $t) { text } }", None),  # a type
        ("query($s: Sentiment = POSITIV) { __typename }", None),  # an enum value
        ("query($s: Sentiment) { __typename }", {"s": "POSITIV"}),  # in variables
    ],
)
def test_production_suggests_no_names(make_api, query: str, variables) -> None:
    api = make_api(**SECURE)
    result = api.client.post(
        "/graphql", json={"query": query, "variables": variables}
    ).json()
    assert error_codes(result)
    assert not [e for e in result["errors"] if "Did you mean" in e["message"]]


def test_development_still_suggests_names(make_api) -> None:
    result = make_api().client.post(
        "/graphql", json={"query": '{ summarize(txt: "x") { text } }'}
    )
    assert "Did you mean 'text'?" in result.json()["errors"][0]["message"]


def test_production_can_turn_introspection_back_on(make_api) -> None:
    api = make_api(**SECURE, introspection=True)
    result = api.client.post(
        "/graphql", json={"query": "{ __schema { types { name } } }"}
    )
    assert "errors" not in result.json()


def test_production_hides_graphiql(make_api) -> None:
    api = make_api(**SECURE)
    page = api.client.get("/graphql", headers={"Accept": "text/html"})
    # Without the page, a browser asks for a media type the endpoint lacks.
    assert page.status_code == 406
    assert "GraphiQL" not in page.text


def test_production_can_turn_graphiql_back_on(make_api) -> None:
    api = make_api(**SECURE, graphiql=True)
    page = api.client.get("/graphql", headers={"Accept": "text/html"})
    assert "graphiql" in page.text.lower()


def test_production_sends_hsts(make_api) -> None:
    api = make_api(**SECURE)
    assert "max-age" in api.client.get("/healthz").headers["strict-transport-security"]
