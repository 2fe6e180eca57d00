"""Persisted queries: Apollo's APQ protocol, its stores, and the allowlist.

The round trips are the ones Apollo Client's persisted query link makes:
hash only; on PERSISTED_QUERY_NOT_FOUND, hash and query; then hash only.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient

from gptmini_graphql.http import GraphQLEndpoint
from gptmini_graphql.logging import RequestIdMiddleware, configure_logging
from gptmini_graphql.persisted_queries import (
    Allowlist,
    MemoryStore,
    PersistedQueries,
    sha256_hex,
)
from gptmini_graphql.schema import build_schema
from gptmini_graphql.services import Services
from tests.conftest import API, LOGIN, error_codes, make_settings, redis_url
from tests.fake_upstream import FakeUpstream

GRJ = "application/graphql-response+json"
HELLO = "query Hello { __typename }"
SUMMARIZE = "query Sum($t: String!) { summarize(text: $t) { text } }"
NO_CACHE = "private, no-cache, must-revalidate"


@contextmanager
def endpoint_api(
    upstream: FakeUpstream, redis_url: str | None = None, **endpoint_options: Any
) -> Iterator[API]:
    """The real endpoint, built with these options, behind the app's services."""
    settings = make_settings(redis_url=redis_url)
    persisted: PersistedQueries | None = endpoint_options.get("persisted_queries")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        services = await Services.start(
            settings, upstream.http_client(), persisted_queries=persisted
        )
        try:
            yield {"services": services}
        finally:
            await services.aclose()

    endpoint = GraphQLEndpoint(build_schema(settings), **endpoint_options)
    app = Starlette(
        routes=[Route("/graphql", endpoint), WebSocketRoute("/graphql", endpoint)],
        middleware=[Middleware(RequestIdMiddleware)],
        lifespan=lifespan,
    )
    with TestClient(app) as client:
        yield API(client, upstream)


def extensions(query: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(query)}}


def post(api: API, body: dict[str, Any], **headers: str) -> Any:
    return api.client.post("/graphql", json=body, headers=headers)


def hash_only(api: API, query: str, **headers: str) -> Any:
    return post(api, {"extensions": extensions(query)}, **headers)


def with_query(api: API, query: str, **headers: str) -> Any:
    """The registering request, from a logged-in caller (anonymous ones are
    answered but not remembered)."""
    headers.setdefault("Authorization", f"Bearer {api.login()}")
    return post(api, {"query": query, "extensions": extensions(query)}, **headers)


def test_anonymous_callers_register_nothing(api: API) -> None:
    anonymous = post(api, {"query": HELLO, "extensions": extensions(HELLO)})
    assert anonymous.json() == {"data": {"__typename": "Query"}}
    assert error_codes(hash_only(api, HELLO).json()) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_long_documents_are_answered_but_not_remembered(api: API) -> None:
    long = "query Long { __typename }" + " " * 20_000
    assert with_query(api, long).json() == {"data": {"__typename": "Query"}}
    assert error_codes(hash_only(api, long).json()) == ["PERSISTED_QUERY_NOT_FOUND"]


def write_manifest(path: Path, *bodies: str) -> Path:
    manifest = {
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": [
            {"id": sha256_hex(body), "name": f"Op{n}", "type": "query", "body": body}
            for n, body in enumerate(bodies)
        ],
    }
    path.write_text(json.dumps(manifest))
    return path


# --- APQ --------------------------------------------------------------------


def test_apq_round_trip_as_apollo_client_makes_it(api: API, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    body = {"variables": {"t": "a long text"}, "extensions": extensions(SUMMARIZE)}
    miss = post(api, body, **auth)
    # 200 and this message and code: every version of Apollo's link retries.
    assert miss.status_code == 200
    assert miss.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    assert error_codes(miss.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    assert miss.headers["cache-control"] == NO_CACHE
    assert api.upstream.requests == []

    registered = post(api, {**body, "query": SUMMARIZE}, **auth)
    assert registered.json() == {"data": {"summarize": {"text": "A short answer."}}}

    hit = post(api, body, **auth)
    assert hit.json() == {"data": {"summarize": {"text": "A short answer."}}}
    assert len(api.upstream.requests) == 2


def test_apq_over_get_as_use_get_for_hashed_queries_sends_it(api: API) -> None:
    params = {
        "operationName": "Hello",
        "variables": "{}",
        "extensions": json.dumps(extensions(HELLO)),
    }
    # A browser-like Accept: still a GraphQL request, not the GraphiQL page.
    headers = {"Accept": "*/*"}
    miss = api.client.get("/graphql", params=params, headers=headers)
    assert miss.status_code == 200
    assert error_codes(miss.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
    # The link retries with POST, query included.
    assert with_query(api, HELLO).json() == {"data": {"__typename": "Query"}}
    hit = api.client.get("/graphql", params=params, headers=headers)
    assert hit.json() == {"data": {"__typename": "Query"}}


def test_a_miss_with_graphql_response_json_is_404_without_data(api: API) -> None:
    miss = hash_only(api, HELLO, Accept=GRJ)
    assert miss.status_code == 404
    assert miss.headers["content-type"] == f"{GRJ}; charset=utf-8"
    assert miss.json() == {
        "errors": [
            {
                "message": "PersistedQueryNotFound",
                "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"},
            }
        ]
    }


def test_the_draft_spec_document_id_names_a_stored_query(api: API) -> None:
    with_query(api, HELLO)
    response = post(api, {"documentId": f"sha256:{sha256_hex(HELLO)}"})
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize("accept", ["application/json", GRJ])
def test_a_hash_that_is_not_the_querys_is_refused_and_not_stored(
    api: API, accept: str
) -> None:
    other = "query Other { __typename }"
    response = post(
        api, {"query": other, "extensions": extensions(HELLO)}, Accept=accept
    )
    assert response.status_code == 400
    assert error_codes(response.json()) == ["PERSISTED_QUERY_HASH_MISMATCH"]
    assert error_codes(hash_only(api, HELLO).json()) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_only_documents_that_ran_are_stored(api: API) -> None:
    for broken in ("query Broken {", "query Unknown { nope }"):
        assert with_query(api, broken).json()["errors"]
        miss = hash_only(api, broken)
        assert error_codes(miss.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


@pytest.mark.parametrize(
    "persisted",
    [
        "not an object",
        {"version": 2, "sha256Hash": "a" * 64},
        {"version": 1},
        {"version": 1, "sha256Hash": "not hex"},
        {"version": 1, "sha256Hash": "a" * 63},
    ],
)
def test_a_malformed_persisted_query_is_400(api: API, persisted: Any) -> None:
    response = post(api, {"extensions": {"persistedQuery": persisted}})
    assert response.status_code == 400
    assert error_codes(response.json()) == ["BAD_REQUEST"]


def test_with_persisted_queries_off_apollo_client_is_told_to_stop(upstream) -> None:
    with endpoint_api(upstream, persisted_queries=PersistedQueries("off")) as api:
        refused = hash_only(api, HELLO)
        assert refused.status_code == 200
        assert refused.json()["errors"][0]["message"] == "PersistedQueryNotSupported"
        assert error_codes(refused.json()) == ["PERSISTED_QUERY_NOT_SUPPORTED"]
        assert hash_only(api, HELLO, Accept=GRJ).status_code == 400
        # What the link sends next: the query, without the extension.
        assert post(api, {"query": HELLO}).json() == {"data": {"__typename": "Query"}}


# --- the allowlist ------------------------------------------------------------


@pytest.fixture
def allowlisted(upstream: FakeUpstream, tmp_path: Path) -> Iterator[API]:
    manifest = write_manifest(tmp_path / "manifest.json", HELLO, LOGIN)
    settings = make_settings(
        persisted_queries="allowlist", persisted_queries_file=manifest
    )
    persisted = PersistedQueries.from_settings(settings)
    with endpoint_api(upstream, persisted_queries=persisted) as api:
        yield api


def test_the_allowlist_runs_listed_operations_by_hash_or_in_full(
    allowlisted: API,
) -> None:
    assert hash_only(allowlisted, HELLO).json() == {"data": {"__typename": "Query"}}
    assert post(allowlisted, {"query": HELLO}).json() == {
        "data": {"__typename": "Query"}
    }
    assert with_query(allowlisted, HELLO).json() == {"data": {"__typename": "Query"}}
    assert allowlisted.login()  # LOGIN is listed: a mutation by its text


@pytest.mark.parametrize(("accept", "status"), [("application/json", 200), (GRJ, 403)])
def test_the_allowlist_refuses_everything_else(
    allowlisted: API, accept: str, status: int
) -> None:
    unlisted = "query Other { __typename }"
    for response in (
        post(allowlisted, {"query": unlisted}, Accept=accept),
        # Even in the shape of an APQ registration: nothing registers.
        with_query(allowlisted, unlisted, Accept=accept),
        # Whitespace is part of the text: only the exact text is listed.
        post(allowlisted, {"query": HELLO + " "}, Accept=accept),
    ):
        assert response.status_code == status
        assert error_codes(response.json()) == ["PERSISTED_QUERY_NOT_ALLOWED"]
        assert "data" not in response.json()
    miss = hash_only(allowlisted, unlisted)
    assert error_codes(miss.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


def _over_websocket(api: API, payload: dict[str, Any], replies: int) -> list[Any]:
    """Subscribes with `payload` over graphql-transport-ws, logged in: the
    first `replies` messages for it."""
    token = api.login()
    with api.client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:
        ws.send_json(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}}
        )
        assert ws.receive_json()["type"] == "connection_ack"
        ws.send_json({"id": "1", "type": "subscribe", "payload": payload})
        return [ws.receive_json() for _ in range(replies)]


def test_the_allowlist_holds_over_websocket_too(allowlisted: API) -> None:
    query = 'subscription { completeStream(prompt: "x") { text } }'
    (message,) = _over_websocket(allowlisted, {"query": query}, 1)
    assert message["type"] == "error"
    assert message["payload"][0]["extensions"] == {
        "code": "PERSISTED_QUERY_NOT_ALLOWED"
    }
    assert allowlisted.upstream.requests == []


def test_a_listed_operation_runs_over_websocket_by_its_hash(allowlisted: API) -> None:
    persisted = {"version": 1, "sha256Hash": sha256_hex(HELLO)}
    payload = {"extensions": {"persistedQuery": persisted}}
    answer, end = _over_websocket(allowlisted, payload, 2)
    assert answer == {
        "id": "1",
        "type": "next",
        "payload": {"data": {"__typename": "Query"}},
    }
    assert end == {"id": "1", "type": "complete"}


def test_allowlist_settings_are_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="PERSISTED_QUERIES_FILE"):
        PersistedQueries.from_settings(make_settings(persisted_queries="allowlist"))
    missing = tmp_path / "missing.json"
    with pytest.raises(ValueError, match=r"PERSISTED_QUERIES_FILE.*missing\.json"):
        PersistedQueries.from_settings(
            make_settings(persisted_queries="allowlist", persisted_queries_file=missing)
        )
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "something else", "operations": []}))
    with pytest.raises(ValueError, match="apollo-persisted-query-manifest"):
        Allowlist.from_file(wrong)


def test_settings_choose_the_mode() -> None:
    memory = PersistedQueries.from_settings(make_settings())
    assert memory.mode == "apq"
    off = PersistedQueries.from_settings(make_settings(persisted_queries="off"))
    assert off.mode == "off"


# --- the stores ---------------------------------------------------------------


def test_the_memory_store_is_a_bounded_lru() -> None:
    async def scenario() -> None:
        store = MemoryStore(max_entries=2, max_chars=10)
        await store.set("a", "1")
        await store.set("b", "2")
        assert await store.get("a") == "1"  # now b is the oldest
        await store.set("c", "3")
        assert await store.get("b") is None
        assert await store.get("a") == "1"
        await store.set("d", "x" * 10)  # over max_chars together: a and c go
        assert [await store.get(key) for key in "acd"] == [None, None, "x" * 10]
        await store.set("e", "y" * 11)  # longer than the whole store: not kept
        assert await store.get("e") is None

    asyncio.run(scenario())


@pytest.mark.skipif(redis_url() is None, reason="REDIS_URL is not set")
def test_replicas_share_registrations_through_redis(upstream: FakeUpstream) -> None:
    # A query no earlier run registered: Redis keeps them for a week.
    hello = f"query Hello{uuid.uuid4().hex} {{ __typename }}"
    with (
        endpoint_api(
            upstream, redis_url(), persisted_queries=PersistedQueries()
        ) as first,
        endpoint_api(
            upstream, redis_url(), persisted_queries=PersistedQueries()
        ) as second,
    ):
        assert error_codes(hash_only(second, hello).json()) == [
            "PERSISTED_QUERY_NOT_FOUND"
        ]
        assert with_query(first, hello).json() == {"data": {"__typename": "Query"}}
        assert hash_only(second, hello).json() == {"data": {"__typename": "Query"}}


def test_without_redis_it_still_answers(
    upstream: FakeUpstream, capfd: pytest.CaptureFixture
) -> None:
    configure_logging("INFO")  # writing to this test's stderr
    # Nothing listens on port 1: every Redis call fails at once.
    with endpoint_api(
        upstream, "redis://127.0.0.1:1/0", persisted_queries=PersistedQueries()
    ) as api:
        miss = hash_only(api, HELLO)
        assert miss.status_code == 200
        assert error_codes(miss.json()) == ["PERSISTED_QUERY_NOT_FOUND"]
        assert with_query(api, HELLO).json() == {"data": {"__typename": "Query"}}
        # Kept locally all the same.
        assert hash_only(api, HELLO).json() == {"data": {"__typename": "Query"}}
    assert capfd.readouterr().err.count("redis unreachable") == 1
