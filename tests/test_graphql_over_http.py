"""GraphQL over HTTP (graphql.github.io/graphql-over-http): media types,
status codes, GET and POST, parameters, UTF-8 — the spec's matrix, and the
audits of its public conformance suite (graphql-http) in Python.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import API, error_codes
from tests.test_persisted_queries import endpoint_api

GRJ = "application/graphql-response+json"
JSON = "application/json"
OMITTED = object()  # no Accept header at all

PARSE_FAILURE = {"query": "{"}
VALIDATION_FAILURE = {"query": "{ f31403dfe404bccbb0e835f2629c6a7 }"}
COERCION_FAILURE = {
    "query": "query CoerceFailure($name: String!) { __type(name: $name) { name } }",
    "variables": {"name": None},
}
NO_OPERATION = {"query": "query A { __typename }", "operationName": "B"}
REQUEST_ERRORS = {
    "parse": (PARSE_FAILURE, "GRAPHQL_PARSE_FAILED"),
    "validation": (VALIDATION_FAILURE, "GRAPHQL_VALIDATION_FAILED"),
    "variable coercion": (COERCION_FAILURE, "BAD_USER_INPUT"),
    "operation not found": (NO_OPERATION, "OPERATION_RESOLUTION_FAILURE"),
}


def send(
    api: API,
    method: str = "POST",
    *,
    body: Any = None,
    content: bytes | None = None,
    params: dict[str, str] | None = None,
    accept: object = JSON,
    content_type: object = JSON,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request with exactly the Accept and Content-Type given (or none)."""
    if body is not None:
        content = json.dumps(body).encode()
    request = api.client.build_request(
        method, "/graphql", content=content, params=params, headers=headers
    )
    for name, value in (("accept", accept), ("content-type", content_type)):
        if value is OMITTED or (name == "content-type" and method == "GET"):
            request.headers.pop(name, None)
        else:
            request.headers[name] = value
    return api.client.send(request)


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0]


def assert_coded_errors(response: httpx.Response) -> dict[str, Any]:
    """A GraphQL-shaped body in UTF-8 JSON whose every error has a code."""
    assert "charset=utf-8" in response.headers["content-type"]
    body = response.json()
    assert "data" in body or "errors" in body
    for error in body.get("errors", ()):
        assert isinstance(error["message"], str)
        assert isinstance(error["extensions"]["code"], str)
    return body


# --- media types --------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (OMITTED, JSON),
        ("*/*", JSON),
        ("application/*", JSON),
        (JSON, JSON),
        (f"{JSON}; charset=utf-8", JSON),
        (GRJ, GRJ),
        (f"{GRJ}; charset=utf-8", GRJ),
        # What the spec recommends, and what Apollo Client 4 sends.
        (f"{GRJ}; charset=utf-8, {JSON}; charset=utf-8", GRJ),
        (f"{GRJ},{JSON};q=0.9", GRJ),
        (f"{JSON}, {GRJ}", JSON),  # equal quality: the first listed
        (f"{JSON};q=0.5, {GRJ}", GRJ),
        (f"*/*, {GRJ}", GRJ),  # equal quality: the specific one
        (f"text/html, {JSON};q=0.1", JSON),
        # GraphiQL's.
        (f"{JSON}, multipart/mixed", JSON),
        # Apollo Client's for an operation with @defer (not a subscription).
        (f"multipart/mixed;deferSpec=20220824,{JSON}", JSON),
        # urql's, for a query: JSON, not a stream.
        (
            f"{GRJ}, application/graphql+json, {JSON}, text/event-stream, multipart/mixed",
            GRJ,
        ),
    ],
)
def test_the_response_media_type_follows_accept(
    api: API, accept: object, expected: str
) -> None:
    response = send(api, body={"query": "{ __typename }"}, accept=accept)
    assert response.status_code == 200
    assert response.headers["content-type"] == f"{expected}; charset=utf-8"
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "accept",
    ["text/html", "application/xml", f"{JSON}; charset=latin1", f"{GRJ};q=0"],
)
def test_an_accept_we_cannot_answer_is_406(api: API, accept: str) -> None:
    response = send(api, body={"query": "{ __typename }"}, accept=accept)
    assert response.status_code == 406
    assert error_codes(assert_coded_errors(response)) == ["NOT_ACCEPTABLE"]


def test_utf8_in_and_out(api: API) -> None:
    response = send(
        api,
        content=json.dumps(
            {"query": '{ __type(name: "Run🏃Swim🏊") { name } }'}
        ).encode(),
        content_type=f"{JSON}; charset=utf-8",
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"__type": None}}
    response.content.decode("utf-8")


@pytest.mark.parametrize(
    "content",
    [
        b'{"query": "\xff"}',  # not UTF-8
        b'{"query": "{ __typename } #\\ud800"}',  # JSON for what UTF-8 cannot hold
        b'{ "not a JSON',
        b"",
        b"[" * 100_000,
    ],
)
@pytest.mark.parametrize("accept", [JSON, GRJ])
def test_a_body_that_is_not_json_in_utf8_is_400(
    api: API, content: bytes, accept: str
) -> None:
    response = send(api, content=content, accept=accept)
    assert response.status_code == 400
    assert media_type(response) == accept
    assert error_codes(assert_coded_errors(response)) == ["BAD_REQUEST"]


@pytest.mark.parametrize(
    "content_type",
    [
        OMITTED,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/graphql",
        f"{JSON}; charset=utf-16",
    ],
)
def test_a_body_that_is_not_application_json_is_415(
    api: API, content_type: object
) -> None:
    response = send(api, body={"query": "{ __typename }"}, content_type=content_type)
    assert response.status_code == 415
    assert error_codes(assert_coded_errors(response)) == ["UNSUPPORTED_MEDIA_TYPE"]


# --- status codes -----------------------------------------------------------


@pytest.mark.parametrize("case", REQUEST_ERRORS)
def test_request_errors_with_application_json_are_200(api: API, case: str) -> None:
    body, code = REQUEST_ERRORS[case]
    response = send(api, body=body, accept=JSON)
    assert response.status_code == 200
    result = assert_coded_errors(response)
    assert error_codes(result) == [code]
    assert "data" not in result  # nothing ran


@pytest.mark.parametrize("case", REQUEST_ERRORS)
def test_request_errors_with_graphql_response_json_are_400_without_data(
    api: API, case: str
) -> None:
    body, code = REQUEST_ERRORS[case]
    response = send(api, body=body, accept=GRJ)
    assert response.status_code == 400
    assert media_type(response) == GRJ
    result = assert_coded_errors(response)
    assert error_codes(result) == [code]
    assert "data" not in result
    assert all("path" not in error for error in result["errors"])


@pytest.mark.parametrize("accept", [JSON, GRJ])
def test_field_errors_are_200_with_data(api: API, accept: str) -> None:
    # Executed: the field failed (no token), the response is partial.
    response = send(
        api, body={"query": '{ summarize(text: "hi") { text } }'}, accept=accept
    )
    assert response.status_code == 200
    result = assert_coded_errors(response)
    assert "data" in result
    assert error_codes(result) == ["UNAUTHENTICATED"]
    assert result["errors"][0]["path"] == ["summarize"]


@pytest.mark.parametrize("accept", [JSON, GRJ])
def test_a_mutation_runs_over_post(api: API, accept: str) -> None:
    response = send(
        api,
        body={
            "query": 'mutation { login(username: "test_user", password: "1234") { tokenType } }'
        },
        accept=accept,
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"login": {"tokenType": "Bearer"}}}


def test_a_refusal_before_execution_has_its_own_status_with_graphql_response_json(
    make_api,
) -> None:
    api = make_api(rate_limit="1/day")
    token = api.login()
    query = {"query": '{ summarize(text: "hi") { text } }'}
    auth = {"Authorization": f"Bearer {token}"}
    assert send(api, body=query, headers=auth, accept=GRJ).status_code == 200
    limited = send(api, body=query, headers=auth, accept=GRJ)
    assert limited.status_code == 429
    result = assert_coded_errors(limited)
    assert error_codes(result) == ["RATE_LIMITED"]
    assert "data" not in result
    assert limited.headers["retry-after"] == str(
        result["errors"][0]["extensions"]["retryAfter"]
    )
    # The same refusal as application/json: a GraphQL response, 200.
    legacy = send(api, body=query, headers=auth, accept=JSON)
    assert legacy.status_code == 200
    assert error_codes(legacy.json()) == ["RATE_LIMITED"]


# --- GET --------------------------------------------------------------------


@pytest.mark.parametrize("accept", [JSON, GRJ, "*/*"])
def test_a_query_over_get(api: API, accept: str) -> None:
    response = send(
        api,
        "GET",
        params={
            "query": "query Type($name: String!) { __type(name: $name) { name } }",
            "variables": json.dumps({"name": "Query"}),
            "operationName": "Type",
        },
        accept=accept,
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"__type": {"name": "Query"}}}


@pytest.mark.parametrize(
    "params",
    [
        {"query": 'mutation { login(username: "a", password: "b") { tokenType } }'},
        {"query": "mutation { __typename }"},
        # The operation picked by operationName decides.
        {
            "query": "query Q { __typename } mutation M { __typename }",
            "operationName": "M",
        },
    ],
)
@pytest.mark.parametrize("accept", [JSON, GRJ])
def test_a_mutation_over_get_is_405(
    api: API, params: dict[str, str], accept: str
) -> None:
    response = send(api, "GET", params=params, accept=accept)
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert error_codes(assert_coded_errors(response)) == ["METHOD_NOT_ALLOWED"]


def test_a_query_next_to_a_mutation_runs_over_get(api: API) -> None:
    params = {
        "query": "query Q { __typename } mutation M { __typename }",
        "operationName": "Q",
    }
    response = send(api, "GET", params=params)
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("accept", [JSON, GRJ])
def test_a_subscription_without_a_stream_is_refused_not_run(
    api: API, token: str, accept: str
) -> None:
    response = send(
        api,
        body={"query": 'subscription { completeStream(prompt: "hi") { text } }'},
        accept=accept,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400
    result = assert_coded_errors(response)
    assert error_codes(result) == ["BAD_REQUEST"]
    assert "text/event-stream" in result["errors"][0]["message"]
    assert api.upstream.requests == []


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_other_methods_are_405(api: API, method: str) -> None:
    response = send(api, method, body={"query": "{ __typename }"})
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert error_codes(assert_coded_errors(response)) == ["METHOD_NOT_ALLOWED"]


@pytest.mark.parametrize(
    "params",
    [
        {"query": "{ __typename }", "variables": "{not json"},
        {"query": "{ __typename }", "variables": "[1]"},
        {"query": "{ __typename }", "extensions": '"x"'},
        {},
    ],
)
def test_bad_get_parameters_are_400(api: API, params: dict[str, str]) -> None:
    response = send(api, "GET", params=params)
    assert response.status_code == 400
    assert error_codes(assert_coded_errors(response)) == ["BAD_REQUEST"]


# --- parameters -------------------------------------------------------------

INVALID = [{"obj": "ect"}, 0, False, ["array"]]


@pytest.mark.parametrize(
    "body",
    [
        *({"query": value} for value in INVALID),
        *({"query": "{ __typename }", "operationName": value} for value in INVALID),
        *(
            {"query": "{ __typename }", name: value}
            for name in ("variables", "extensions")
            for value in ["string", 0, False, ["array"]]
        ),
        {"qeury": "{ __typename }"},
        {},
        "just a string",
        42,
        [{"query": "{ __typename }"}],  # a batch, and batching is off
    ],
    ids=repr,
)
@pytest.mark.parametrize("accept", [JSON, GRJ])
def test_a_request_that_is_not_well_formed_is_400(
    api: API, body: Any, accept: str
) -> None:
    response = send(api, body=body, accept=accept)
    assert response.status_code == 400
    assert media_type(response) == accept
    assert error_codes(assert_coded_errors(response)) == ["BAD_REQUEST"]


@pytest.mark.parametrize("name", ["variables", "operationName", "extensions"])
@pytest.mark.parametrize("accept", [JSON, GRJ])
def test_null_parameters_are_as_if_absent(api: API, name: str, accept: str) -> None:
    response = send(api, body={"query": "{ __typename }", name: None}, accept=accept)
    assert response.status_code == 200
    assert response.json() == {"data": {"__typename": "Query"}}


def test_maps_for_variables_and_extensions(api: API) -> None:
    response = send(
        api,
        body={
            "query": "query Type($name: String!) { __type(name: $name) { name } }",
            "variables": {"name": "sometype"},
            "extensions": {"some": "value"},
            "operationName": "Type",
        },
        accept=GRJ,
    )
    assert response.status_code == 200
    assert response.json() == {"data": {"__type": None}}


# --- GraphiQL and the log -----------------------------------------------------


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_browser_gets_graphiql(api: API) -> None:
    response = send(api, "GET", accept=BROWSER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "GraphiQL" in response.text


def test_a_get_without_html_is_a_graphql_request(api: API) -> None:
    # curl and scripts: no page, a 400 that says what is missing.
    response = send(api, "GET", accept="*/*")
    assert response.status_code == 400
    assert "query" in assert_coded_errors(response)["errors"][0]["message"]


def test_without_graphiql_a_browser_gets_a_graphql_error(upstream) -> None:
    with endpoint_api(upstream, graphiql=False) as api:
        response = send(api, "GET", accept=BROWSER)
    assert response.status_code == 400
    assert media_type(response) == JSON
    assert error_codes(assert_coded_errors(response)) == ["BAD_REQUEST"]
    assert "GraphiQL" not in response.text


def test_refusals_are_logged_with_their_code(
    capfd: pytest.CaptureFixture, make_api
) -> None:
    api = make_api()
    capfd.readouterr()
    send(api, "GET", params={"query": "mutation { __typename }"})
    lines = [
        json.loads(line)
        for line in capfd.readouterr().err.splitlines()
        if line.startswith("{")
    ]
    line = next(line for line in lines if line["message"] == "graphql operation")
    assert line["outcome"] == "METHOD_NOT_ALLOWED"
