"""Property: whatever a client sends to /graphql, the answer is a GraphQL
response or a coded refusal — never a 5xx, never an error without a code or
with a trace in it, never a body with neither `data` nor `errors`.

Documents come from our own schema (hypothesis-graphql: valid ones, and ones
that break it on purpose) and from arbitrary text; variables are arbitrary
JSON. The examples are bounded and derandomized, so CI runs the same few
seconds every time; `FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py` explores
further, with fresh random examples on each run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import hypothesis_graphql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from gptmini_graphql.app import create_app
from gptmini_graphql.schema import build_schema
from tests.conftest import LOGIN, make_settings
from tests.fake_upstream import FakeUpstream

SDL = str(build_schema())
EXPLORE = os.environ.get("FUZZ_EXAMPLES")
FUZZ = settings(
    max_examples=int(EXPLORE or 60),
    deadline=None,
    derandomize=EXPLORE is None,
    database=None,  # writes nothing into the work tree
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
ACCEPTS = [
    "application/json",
    "application/graphql-response+json",
    "*/*",
    "application/graphql-response+json, application/json;q=0.9",
]
WITH_VARIABLES = [
    "query S($t: String!, $n: Int!) { summarize(text: $t, maxWords: $n) { text } }",
    "query T($t: String!, $l: String!, $s: String) "
    "{ translate(text: $t, targetLanguage: $l, sourceLanguage: $s) { text } }",
    "query C($p: String!, $m: Int!, $x: Float!, $y: String) "
    "{ complete(prompt: $p, maxTokens: $m, temperature: $x, system: $y) { text } }",
    "mutation L($u: String!, $p: String!) { login(username: $u, password: $p) { tokenType } }",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
names = st.sampled_from(["t", "n", "l", "s", "p", "m", "x", "y", "u"])
words = st.text(min_size=1, max_size=40)
# Values that WITH_VARIABLES's operations accept, most of the time: these get
# as far as the (fake) model.
plausible_variables = st.fixed_dictionaries(
    {
        "t": words,
        "n": st.integers(0, 1001),
        "l": st.sampled_from(["fr", "French", "de", "zz", ""]),
        "s": st.none() | st.sampled_from(["en", "klingon"]),
        "p": words,
        "m": st.integers(0, 5000),
        "x": st.floats(0, 2.5),
        "y": st.none() | words,
        "u": words,
    }
)
documents = st.one_of(
    hypothesis_graphql.queries(SDL),
    hypothesis_graphql.mutations(SDL),
    hypothesis_graphql.from_schema(SDL, mode=hypothesis_graphql.Mode.NEGATIVE),
    st.sampled_from(WITH_VARIABLES),
    st.text(max_size=200),
)
# Mostly what clients send (an object of variables, no operationName), so
# that documents get as far as execution; sometimes anything at all.
requests = st.fixed_dictionaries(
    {
        "query": documents,
        "variables": st.one_of(
            st.none(),
            plausible_variables,
            st.dictionaries(names, json_values, max_size=5),
            json_values,
        ),
        "operationName": st.one_of(
            st.none(),
            st.none(),
            st.none(),
            st.sampled_from(["S", "T", "C", "L"]),
            st.text(max_size=8),
        ),
    }
)


class Served:
    def __init__(self, client: TestClient, token: str) -> None:
        self.client = client
        self.token = token


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    upstream = FakeUpstream()
    app = create_app(
        make_settings(rate_limit="100000/minute"),
        llm_http_client=upstream.http_client(),
    )
    with TestClient(app) as client:
        login = client.post(
            "/graphql",
            json={
                "query": LOGIN,
                "variables": {"username": "test_user", "password": "1234"},
            },
        )
        yield Served(client, login.json()["data"]["login"]["accessToken"])


def check(response: Any, accept: str) -> None:
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    if response.headers["content-type"].startswith("text/html"):
        return  # GraphiQL, for a browser-like GET without a query
    body = response.json()
    assert isinstance(body, dict) and ("data" in body or "errors" in body), body
    for error in body.get("errors", ()):
        code = error["extensions"]["code"]
        assert isinstance(code, str), error
        assert code != "INTERNAL_SERVER_ERROR", error
        assert "Traceback" not in error["message"]
    if "data" in body and response.status_code != 200:
        pytest.fail(f"data with status {response.status_code}: {body}")
    if "data" not in body and accept.startswith("application/graphql-response+json"):
        assert 400 <= response.status_code < 500, body


@FUZZ
@given(
    request=requests,
    authenticated=st.booleans(),
    accept=st.sampled_from(ACCEPTS),
)
def test_post_never_fails_unmasked(
    served: Served, request: dict[str, Any], authenticated: bool, accept: str
) -> None:
    headers = {"Accept": accept}
    if authenticated:
        headers["Authorization"] = f"Bearer {served.token}"
    response = served.client.post("/graphql", json=request, headers=headers)
    check(response, accept)


@FUZZ
@given(
    request=requests,
    authenticated=st.booleans(),
    accept=st.sampled_from(ACCEPTS),
)
def test_get_never_fails_unmasked(
    served: Served, request: dict[str, Any], authenticated: bool, accept: str
) -> None:
    headers = {"Accept": accept}
    if authenticated:
        headers["Authorization"] = f"Bearer {served.token}"
    params = {
        "query": request["query"],
        "variables": json.dumps(request["variables"]),
    }
    if request["operationName"] is not None:
        params["operationName"] = request["operationName"]
    response = served.client.get("/graphql", params=params, headers=headers)
    check(response, accept)


@FUZZ
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_body_is_a_coded_answer(served: Served, body: bytes) -> None:
    response = served.client.post(
        "/graphql", content=body, headers={"Content-Type": "application/json"}
    )
    check(response, "application/json")
