"""The /graphql endpoint: error codes, masking, request ids and the log line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import strawberry
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.testclient import TestClient

from gptmini_graphql.extensions.errors import ErrorCodesExtension
from gptmini_graphql.http import GraphQLEndpoint
from gptmini_graphql.http.exchange import Exchange, ExchangeResponse
from gptmini_graphql.http.negotiation import GRAPHQL_RESPONSE_JSON
from gptmini_graphql.logging import RequestIdMiddleware, configure_logging
from gptmini_graphql.schema import build_schema
from gptmini_graphql.services import Services
from tests.conftest import API, error_codes, make_settings


def _log_lines(captured: str) -> list[dict]:
    return [json.loads(line) for line in captured.splitlines() if line.startswith("{")]


def test_a_syntax_error_is_graphql_parse_failed(api: API) -> None:
    result = api.post("{ summarize(")
    assert error_codes(result) == ["GRAPHQL_PARSE_FAILED"]


def test_an_unknown_field_is_graphql_validation_failed(api: API) -> None:
    result = api.post("{ nope }")
    assert error_codes(result) == ["GRAPHQL_VALIDATION_FAILED"]


def test_a_missing_variable_is_bad_user_input(api: API, token: str) -> None:
    result = api.post(
        "query S($t: String!) { summarize(text: $t) { text } }", token=token
    )
    assert error_codes(result) == ["BAD_USER_INPUT"]


SKIP = "query($b: Boolean!) { __typename @skip(if: $b) }"


@pytest.mark.parametrize(
    ("query", "variables", "code"),
    [
        # The values do not fit the variables' types: the client's input.
        (SKIP, {"b": "x"}, "BAD_USER_INPUT"),
        (SKIP, {"b": None}, "BAD_USER_INPUT"),
        (SKIP, {}, "BAD_USER_INPUT"),
        # The document uses its variables wrong: the document's fault.
        ("query { __typename @skip(if: $b) }", {}, "GRAPHQL_VALIDATION_FAILED"),
        ("query($b: Boolean) { __typename }", {}, "GRAPHQL_VALIDATION_FAILED"),
    ],
)
def test_variables_are_coded_by_whose_fault_it_is(
    api: API, query: str, variables: dict, code: str
) -> None:
    assert error_codes(api.post(query, variables)) == [code]


@strawberry.type
class BrokenQuery:
    @strawberry.field
    def broken(self) -> str:
        raise RuntimeError("database password is hunter2")


def test_unexpected_errors_are_masked_and_logged(capfd: pytest.CaptureFixture) -> None:
    # The real endpoint and middleware around a schema with a bug in it.
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        services = await Services.start(make_settings())
        yield {"services": services}
        await services.aclose()

    app = Starlette(
        routes=[
            Route(
                "/graphql",
                GraphQLEndpoint(
                    strawberry.Schema(
                        query=BrokenQuery, extensions=[ErrorCodesExtension]
                    )
                ),
            )
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
    configure_logging("INFO")
    with TestClient(app) as client:
        response = client.post("/graphql", json={"query": "{ broken }"})
    body = response.json()
    assert body["errors"][0]["message"] == "Internal server error"
    assert body["errors"][0]["extensions"] == {"code": "INTERNAL_SERVER_ERROR"}
    assert "hunter2" not in response.text
    logged = _log_lines(capfd.readouterr().err)
    error_line = next(
        line for line in logged if line["message"] == "unexpected error in resolver"
    )
    assert "hunter2" in error_line["exception"]
    assert error_line["request_id"] == response.headers["x-request-id"]


def test_the_request_id_is_echoed_or_generated(api: API) -> None:
    given = api.client.post(
        "/graphql",
        json={"query": "{ __typename }"},
        headers={"X-Request-ID": "abc-123"},
    )
    assert given.headers["x-request-id"] == "abc-123"
    generated = api.client.get("/healthz")
    assert len(generated.headers["x-request-id"]) == 32
    unsafe = api.client.get("/healthz", headers={"X-Request-ID": "a\tb" + "x" * 200})
    assert unsafe.headers["x-request-id"] != "a\tb" + "x" * 200


def test_one_json_log_line_per_operation(
    capfd: pytest.CaptureFixture, make_api
) -> None:
    api = make_api()
    token = api.login()
    capfd.readouterr()
    api.client.post(
        "/graphql",
        json={
            "query": 'query Sum { a: summarize(text: "hello") { text } b: summarize(text: "x") { text } }',
            # No operationName: the log names the operation by its own name.
        },
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-42"},
    )
    lines = [
        line
        for line in _log_lines(capfd.readouterr().err)
        if line["message"] == "graphql operation"
    ]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-42"
    assert line["level"] == "INFO"
    assert line["user"] == "test_user"
    assert line["operation"] == "Sum"
    assert line["fields"] == ["summarize"]
    assert line["model"] == "gpt-4o-mini-2024-07-18"
    assert line["prompt_tokens"] == 200 and line["completion_tokens"] == 40
    assert line["cost_usd"] == pytest.approx(2 * (100 * 0.15 + 20 * 0.6) / 1e6)
    assert line["latency_ms"] > 0
    assert line["outcome"] == "OK"
    assert "time" in line
    # The texts themselves stay out of the log, and so does the token.
    assert "hello" not in json.dumps(line) and token not in json.dumps(line)


def test_the_log_line_records_the_refusal(
    capfd: pytest.CaptureFixture, make_api
) -> None:
    # Made inside the test: the log handler writes to the fd 2 of its creation.
    api = make_api()
    capfd.readouterr()
    api.post('{ summarize(text: "hi") { text } }')
    line = next(
        line
        for line in _log_lines(capfd.readouterr().err)
        if line["message"] == "graphql operation"
    )
    assert line["outcome"] == "UNAUTHENTICATED"
    assert line["level"] == "WARNING"


def test_health_and_readiness(api: API) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    readiness = api.client.get("/readyz").json()
    assert readiness["status"] == "ready"
    assert readiness["model"] == "gpt-4o-mini"


def test_logs_hold_lengths_and_hashes_not_texts_or_secrets(
    capfd: pytest.CaptureFixture, make_api
) -> None:
    api = make_api(fake_password="pa55-word-xyz", openai_api_key="sk-live-secret")
    capfd.readouterr()
    token = api.login(password="pa55-word-xyz")
    api.post(
        "query S($t: String!) { summarize(text: $t) { text } }",
        {"t": "my private diary entry"},
        token=token,
    )
    logged = capfd.readouterr().err
    for secret in ("pa55-word-xyz", "sk-live-secret", token, "my private diary"):
        assert secret not in logged
    line = [
        entry for entry in _log_lines(logged) if entry["message"] == "graphql operation"
    ][-1]
    assert line["inputs"]["t"] == {"chars": 22, "sha256": line["inputs"]["t"]["sha256"]}
    assert len(line["inputs"]["t"]["sha256"]) == 16


def test_log_texts_is_an_explicit_debugging_choice(
    capfd: pytest.CaptureFixture, make_api
) -> None:
    api = make_api(log_texts=True)
    token = api.login()
    capfd.readouterr()
    api.post(
        "query S($t: String!) { summarize(text: $t) { text } }",
        {"t": "debug me"},
        token=token,
    )
    line = [
        entry
        for entry in _log_lines(capfd.readouterr().err)
        if entry["message"] == "graphql operation"
    ][-1]
    assert line["inputs"]["t"] == "debug me"


def test_what_is_set_on_the_sub_response_reaches_the_response() -> None:
    endpoint = GraphQLEndpoint(build_schema(make_settings()))
    sub_response = ExchangeResponse(Exchange(GRAPHQL_RESPONSE_JSON))
    assert sub_response.headers.raw == [] and sub_response.body == b""

    sub_response.headers["X-Set-By-A-Resolver"] = "yes"
    response = endpoint.create_response({"data": None}, sub_response)

    assert response.status_code == 200
    assert response.headers["x-set-by-a-resolver"] == "yes"
    assert response.headers["content-type"] == (
        f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
    )
    assert response.headers["content-length"] == str(len(response.body))
