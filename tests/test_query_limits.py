"""Abusive documents and bodies are refused before they cost anything, each
with its own code."""

from __future__ import annotations

import pytest

from tests.conftest import API, error_codes


def _codes(api: API, query: str, token: str | None = None) -> list[str]:
    response = api.client.post(
        "/graphql",
        json={"query": query},
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )
    return error_codes(response.json())


def test_a_deep_operation_is_refused(make_api) -> None:
    query = '{ summarize(text: "x") { usage { costUsd } } }'  # three levels
    api = make_api(max_query_depth=3)
    token = api.login()
    assert _codes(api, query, token) == []
    api = make_api(max_query_depth=2)
    assert _codes(api, query, token) == ["QUERY_TOO_DEEP"]


def test_depth_counts_through_fragments(make_api) -> None:
    api = make_api(max_query_depth=2)
    query = """
      query { ...A }
      fragment A on Query { summarize(text: "x") { ...B } }
      fragment B on Summary { usage { costUsd } }
    """
    assert _codes(api, query) == ["QUERY_TOO_DEEP"]


def test_introspection_does_not_count_towards_depth(make_api) -> None:
    api = make_api(max_query_depth=2)
    query = "{ __schema { types { fields { type { ofType { ofType { name } } } } } } }"
    response = api.client.post("/graphql", json={"query": query})
    assert "errors" not in response.json()


def test_too_many_aliases_are_refused(make_api) -> None:
    api = make_api(max_aliases=2)
    query = "{ a: __typename b: __typename c: __typename }"
    assert _codes(api, query) == ["TOO_MANY_ALIASES"]
    assert _codes(api, "{ a: __typename b: __typename }") == []


def test_too_many_tokens_are_refused(make_api) -> None:
    api = make_api(max_query_tokens=20)
    query = "{ " + " ".join(["__typename"] * 30) + " }"
    assert _codes(api, query) == ["QUERY_TOO_LARGE"]
    # Past the cap by far, or with its last token the one too many.
    assert _codes(api, "{ " + "__typename " * 5000 + "}") == ["QUERY_TOO_LARGE"]
    assert _codes(api, "{ " + "__typename " * 19 + "}") == ["QUERY_TOO_LARGE"]
    assert _codes(api, "{ " + "__typename " * 18 + "}") == []


@pytest.mark.parametrize(
    "query",
    [
        "{ __typename ",  # ends within the cap
        "{ ) " + "__typename " * 30 + "}",  # wrong within the cap, long after it
        "{ __typename } }",
        '{ __typename(a: "unterminated) }',
    ],
)
def test_a_document_wrong_within_the_cap_is_a_parse_failure(
    make_api, query: str
) -> None:
    api = make_api(max_query_tokens=20)
    assert _codes(api, query) == ["GRAPHQL_PARSE_FAILED"]


def test_too_many_llm_fields_are_refused_before_the_model_is_asked(make_api) -> None:
    api = make_api(max_llm_fields=2)
    token = api.login()
    query = (
        "{ "
        + " ".join(f'a{i}: analyze(text: "x") {{ score }}' for i in range(3))
        + " }"
    )
    assert _codes(api, query, token) == ["TOO_MANY_LLM_FIELDS"]
    assert api.upstream.requests == []


def test_a_fragment_bomb_is_counted_not_expanded(make_api) -> None:
    """Each fragment spreads the next twice: 2^40 fields if expanded."""
    api = make_api(max_llm_fields=5, max_query_tokens=5000, max_aliases=100)
    fragments = [
        f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}" for i in range(40)
    ]
    fragments.append('fragment F40 on Query { analyze(text: "x") { score } }')
    query = "query { ...F0 }\n" + "\n".join(fragments)
    codes = _codes(api, query, api.login())
    assert "TOO_MANY_LLM_FIELDS" in codes
    assert api.upstream.requests == []


@pytest.mark.parametrize("declared", [True, False])
def test_a_body_over_the_limit_is_413_before_parsing(make_api, declared: bool) -> None:
    api = make_api(max_body_bytes=1024)
    body = b'{"query": "{ __typename }", "pad": "' + b"x" * 2000 + b'"}'

    def chunks():
        yield body[:1000]
        yield body[1000:]

    response = api.client.post(
        "/graphql",
        content=body if declared else chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert error_codes(response.json()) == ["PAYLOAD_TOO_LARGE"]
