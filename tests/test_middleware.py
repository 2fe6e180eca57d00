"""What guards every request: CSRF prevention, CORS, security headers."""

from __future__ import annotations

import pytest

from tests.conftest import API, error_codes

QUERY = "{ __typename }"


def test_every_response_carries_the_security_headers(api: API) -> None:
    for response in (
        api.client.get("/healthz"),
        api.client.post("/graphql", json={"query": QUERY}),
        api.client.get("/graphql", headers={"Accept": "text/html"}),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers  # development


CROSS_SITE = {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}


@pytest.mark.parametrize(
    ("method", "headers", "body"),
    [
        ("GET", CROSS_SITE, None),
        (
            "POST",
            {**CROSS_SITE, "Content-Type": "text/plain"},
            '{"query": "{ __typename }"}',
        ),
        (
            "POST",
            {**CROSS_SITE, "Content-Type": "application/x-www-form-urlencoded"},
            "query=x",
        ),
        (
            "POST",
            {**CROSS_SITE, "Content-Type": "multipart/form-data; boundary=x"},
            "--x--",
        ),
        # An old browser that sends no Sec-Fetch-Site still sends Origin on a POST.
        (
            "POST",
            {"Origin": "https://evil.example", "Content-Type": "text/plain"},
            "{}",
        ),
    ],
)
def test_simple_cross_site_requests_are_refused(
    api: API, method: str, headers: dict, body: str | None
) -> None:
    response = api.client.request(
        method,
        "/graphql",
        params={"query": QUERY} if method == "GET" else None,
        content=body,
        headers=headers,
    )
    assert response.status_code == 400
    assert error_codes(response.json()) == ["CSRF_REFUSED"]


@pytest.mark.parametrize(
    "extra",
    [
        {"Apollo-Require-Preflight": "true"},
        {"X-Apollo-Operation-Name": "Q"},
    ],
)
def test_a_preflight_header_lets_a_cross_site_get_through(
    api: API, extra: dict
) -> None:
    response = api.client.get(
        "/graphql", params={"query": QUERY}, headers={**CROSS_SITE, **extra}
    )
    assert response.json() == {"data": {"__typename": "Query"}}


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, scripts, servers
        {"Sec-Fetch-Site": "same-origin"},  # our own GraphiQL
        {"Sec-Fetch-Site": "none"},  # typed into the address bar
    ],
)
def test_requests_no_other_site_could_forge_go_through(api: API, headers: dict) -> None:
    response = api.client.get("/graphql", params={"query": QUERY}, headers=headers)
    assert response.json() == {"data": {"__typename": "Query"}}


def test_json_posts_need_no_preflight_header(api: API) -> None:
    response = api.client.post("/graphql", json={"query": QUERY}, headers=CROSS_SITE)
    assert response.json() == {"data": {"__typename": "Query"}}


def test_the_graphiql_page_loads_cross_site(api: API) -> None:
    response = api.client.get("/graphql", headers={**CROSS_SITE, "Accept": "text/html"})
    assert response.status_code == 200


def test_cors_allows_only_the_configured_origins(make_api) -> None:
    api = make_api(cors_allow_origins=["https://app.example"])
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = api.client.options(
        "/graphql", headers={"Origin": "https://app.example", **preflight}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = api.client.options(
        "/graphql", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in refused.headers
    # An allowed origin's own requests are not cross-site for CSRF prevention.
    response = api.client.post(
        "/graphql",
        content='{"query": "{ __typename }"}',
        headers={"Origin": "https://app.example", "Content-Type": "text/plain"},
    )
    assert response.status_code != 400 or "CSRF_REFUSED" not in response.text


def test_without_origins_no_cors_headers_are_sent(api: API) -> None:
    response = api.client.post(
        "/graphql", json={"query": QUERY}, headers={"Origin": "https://app.example"}
    )
    assert "access-control-allow-origin" not in response.headers
