"""Admin operations: FORBIDDEN for users; bad input refused with nothing
written; per-user rate limits; roles."""

from __future__ import annotations

import pytest

from tests.auth.accounts import (
    CREATE_USER,
    PASSWORD,
    SUMMARIZE,
    UPDATE_USER,
    USERS,
    add_user,
    login,
    ok,
    refused,
)


@pytest.fixture
def admin_api(make_api, database_url):
    api = make_api(database_url=database_url)
    api.admin = login(api)["accessToken"]
    return api


def _usernames(api) -> list[str]:
    return [user["username"] for user in ok(api.post(USERS, token=api.admin))["users"]]


def test_admin_operations_are_forbidden_to_users(admin_api) -> None:
    api = admin_api
    user = add_user(api, api.admin, "kim")
    for query, variables in (
        (USERS, None),
        (CREATE_USER, {"username": "x", "password": PASSWORD}),
        (UPDATE_USER, {"username": "kim", "role": "ADMIN"}),
    ):
        assert refused(api.post(query, variables, token=user)) == "FORBIDDEN"
        assert refused(api.post(query, variables)) == "UNAUTHENTICATED"
    assert _usernames(api) == ["kim", "test_user"]


@pytest.mark.parametrize(
    "variables",
    [
        {"username": ""},
        {"username": "x" * 65},
        {"username": "y" * 100_000},
        {"username": "bell\x07"},
        {"username": "new\nline"},
        {"username": "zero\u200bwidth"},
        {"username": " padded"},
        {"username": "ok-name", "password": "short"},
        {"username": "ok-name", "password": "p" * 2000},
        {"username": "ok-name", "role": "SUPERUSER"},
        {"username": "test_user"},  # exists already
    ],
    ids=[
        "empty",
        "65 chars",
        "100 kB",
        "control",
        "newline",
        "invisible",
        "spaces",
        "short password",
        "long password",
        "unknown role",
        "taken",
    ],
)
def test_bad_users_are_bad_input_and_nothing_is_written(admin_api, variables) -> None:
    api = admin_api
    result = api.post(CREATE_USER, {"password": PASSWORD, **variables}, token=api.admin)
    assert refused(result) == "BAD_USER_INPUT"
    assert _usernames(api) == ["test_user"]


def test_a_10_mb_username_is_refused_before_parsing(admin_api) -> None:
    api = admin_api
    response = api.client.post(
        "/graphql",
        json={
            "query": CREATE_USER,
            "variables": {"username": "z" * 10_000_000, "password": PASSWORD},
        },
        headers={"Authorization": f"Bearer {api.admin}"},
    )
    assert response.status_code == 413
    assert [e["extensions"]["code"] for e in response.json()["errors"]] == [
        "PAYLOAD_TOO_LARGE"
    ]
    assert _usernames(api) == ["test_user"]


def test_bad_updates_change_nothing(admin_api) -> None:
    api = admin_api
    add_user(api, api.admin, "lee")
    for variables in (
        {"username": "lee", "role": "ROOT"},
        {"username": "lee", "rateLimit": "lots"},
        {"username": "lee", "rateLimit": ""},
        {"username": "lee", "disabled": True, "rateLimit": "5/fortnight"},
        {"username": "nobody", "disabled": True},
        {"username": "test_user", "disabled": True},  # not yourself
        {"username": "test_user", "role": "USER"},
    ):
        assert refused(api.post(UPDATE_USER, variables, token=api.admin)) == (
            "BAD_USER_INPUT"
        )
    users = ok(api.post(USERS, token=api.admin))["users"]
    assert users == [
        {"username": "lee", "role": "USER", "disabled": False},
        {"username": "test_user", "role": "ADMIN", "disabled": False},
    ]


def test_an_update_that_changes_nothing_answers_the_user(admin_api) -> None:
    api = admin_api
    add_user(api, api.admin, "pat")
    same = ok(api.post(UPDATE_USER, {"username": "pat"}, token=api.admin))
    assert same["updateUser"] == {
        "username": "pat", "role": "USER", "disabled": False, "rateLimit": None,
    }  # fmt: skip
    nobody = api.post(UPDATE_USER, {"username": "nobody"}, token=api.admin)
    assert refused(nobody) == "BAD_USER_INPUT"


def test_a_users_own_rate_limit_replaces_the_default(admin_api) -> None:
    api = admin_api
    mia, ned = add_user(api, api.admin, "mia"), add_user(api, api.admin, "ned")
    updated = ok(
        api.post(
            UPDATE_USER, {"username": "mia", "rateLimit": "1/day"}, token=api.admin
        )
    )
    assert updated["updateUser"]["rateLimit"] == "1/day"
    assert ok(api.post(SUMMARIZE, token=mia))
    assert refused(api.post(SUMMARIZE, token=mia)) == "RATE_LIMITED"
    for _ in range(3):
        assert ok(api.post(SUMMARIZE, token=ned))  # the default, 1000/minute
    # Null: back to the default (left out: unchanged).
    ok(api.post(UPDATE_USER, {"username": "mia", "disabled": False}, token=api.admin))
    assert refused(api.post(SUMMARIZE, token=mia)) == "RATE_LIMITED"
    cleared = ok(
        api.post(UPDATE_USER, {"username": "mia", "rateLimit": None}, token=api.admin)
    )
    assert cleared["updateUser"]["rateLimit"] is None
    assert ok(api.post(SUMMARIZE, token=mia))


def test_a_promoted_user_can_administer_at_once(admin_api) -> None:
    api = admin_api
    oli = add_user(api, api.admin, "oli")
    assert refused(api.post(USERS, token=oli)) == "FORBIDDEN"
    ok(api.post(UPDATE_USER, {"username": "oli", "role": "ADMIN"}, token=api.admin))
    assert "oli" in [u["username"] for u in ok(api.post(USERS, token=oli))["users"]]


def test_a_10_mb_username_let_through_the_body_limit_is_bad_input(make_api) -> None:
    api = make_api(max_body_bytes=20_000_000)
    admin = login(api)["accessToken"]
    variables = {"username": "z" * 10_000_000, "password": PASSWORD}
    result = api.post(CREATE_USER, variables, token=admin)
    assert refused(result) == "BAD_USER_INPUT"
    assert len(str(result)) < 1000  # the answer does not repeat it
    assert [u["username"] for u in ok(api.post(USERS, token=admin))["users"]] == [
        "test_user"
    ]
