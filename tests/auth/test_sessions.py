"""Login, refresh with rotation and reuse detection, logout, password change,
and how fast a revocation reaches another replica: through GraphQL over HTTP,
on SQLite and (with DATABASE_URL) on PostgreSQL."""

from __future__ import annotations

import pytest

from tests.auth.accounts import (
    CREATE_USER,
    LOGOUT,
    ME,
    PASSWORD,
    REFRESH,
    SUMMARIZE,
    UPDATE_USER,
    add_user,
    login,
    ok,
    refused,
)
from tests.conftest import LOGIN, Clock


def test_the_seed_user_logs_in_on_a_fresh_database_as_an_admin(
    make_api, database_url
) -> None:
    api = make_api(database_url=database_url)
    tokens = login(api)
    assert tokens["refreshToken"].startswith("gmr_")
    me = ok(api.post(ME, token=tokens["accessToken"]))["me"]
    assert me["username"] == "test_user" and me["role"] == "ADMIN"
    assert me["createdAt"] and me["rateLimit"] is None


def test_users_persist_across_a_restart(make_api, database_url) -> None:
    first = make_api(database_url=database_url)
    admin = login(first)["accessToken"]
    add_user(first, admin, "carol")
    first.stop()
    # Other seed settings on a database that has users: nobody new is made.
    again = make_api(
        database_url=database_url, fake_username="mallory", fake_password="1234"
    )
    assert login(again, "carol", PASSWORD)["accessToken"]
    assert login(again)["accessToken"]  # the seed user, unchanged
    result = again.post(LOGIN, {"username": "mallory", "password": "1234"})
    assert refused(result) == "UNAUTHENTICATED"


def test_wrong_password_unknown_user_and_disabled_user_look_the_same(
    make_api, database_url
) -> None:
    api = make_api(database_url=database_url)
    admin = login(api)["accessToken"]
    add_user(api, admin, "dave")
    ok(api.post(UPDATE_USER, {"username": "dave", "disabled": True}, token=admin))
    answers = [
        api.post(LOGIN, {"username": name, "password": password})
        for name, password in (
            ("test_user", "wrong"),
            ("nobody", PASSWORD),
            ("dave", PASSWORD),
            ("x" * 100, PASSWORD),
        )
    ]
    assert all(answer == answers[0] for answer in answers)
    assert refused(answers[0]) == "UNAUTHENTICATED"
    assert answers[0]["errors"][0]["message"] == "Invalid username or password."


def test_refresh_rotates_and_reuse_revokes_the_whole_session(
    make_api, database_url
) -> None:
    api = make_api(database_url=database_url)
    first = login(api)
    second = ok(api.post(REFRESH, {"token": first["refreshToken"]}))["refresh"]
    assert second["refreshToken"] != first["refreshToken"]
    assert ok(api.post(ME, token=second["accessToken"]))
    third = ok(api.post(REFRESH, {"token": second["refreshToken"]}))["refresh"]

    # The first token again: someone holds a copy. The family ends.
    assert refused(api.post(REFRESH, {"token": first["refreshToken"]})) == (
        "UNAUTHENTICATED"
    )
    assert refused(api.post(REFRESH, {"token": third["refreshToken"]})) == (
        "UNAUTHENTICATED"
    )
    for access in (first, second, third):
        assert refused(api.post(SUMMARIZE, token=access["accessToken"])) == (
            "UNAUTHENTICATED"
        )
    # Another session of the same user is not touched.
    assert ok(api.post(ME, token=login(api)["accessToken"]))


@pytest.mark.parametrize("token", ["", "gmr_unknown", "x" * 10_000])
def test_unknown_refresh_tokens_are_unauthenticated(api, token: str) -> None:
    result = api.post(REFRESH, {"token": token})
    assert refused(result) == "UNAUTHENTICATED"
    assert token not in result["errors"][0]["message"] or not token


def test_a_refresh_token_expires(make_api) -> None:
    clock = Clock()
    api = make_api(clock=clock, refresh_token_ttl_days=1)
    tokens = login(api)
    clock.advance(24 * 3600)
    assert refused(api.post(REFRESH, {"token": tokens["refreshToken"]})) == (
        "UNAUTHENTICATED"
    )


def test_logout_ends_the_callers_session(make_api, database_url) -> None:
    api = make_api(database_url=database_url)
    tokens, other = login(api), login(api)
    assert ok(api.post(LOGOUT, token=tokens["accessToken"])) == {"logout": True}
    assert refused(api.post(ME, token=tokens["accessToken"])) == "UNAUTHENTICATED"
    assert refused(api.post(REFRESH, {"token": tokens["refreshToken"]})) == (
        "UNAUTHENTICATED"
    )
    assert ok(api.post(ME, token=other["accessToken"]))


def test_logout_with_a_refresh_token_needs_no_access_token(api) -> None:
    tokens = login(api)
    assert ok(api.post(LOGOUT, {"token": tokens["refreshToken"]}))
    assert refused(api.post(ME, token=tokens["accessToken"])) == "UNAUTHENTICATED"


def test_changing_the_password_ends_every_session(make_api, database_url) -> None:
    api = make_api(database_url=database_url)
    admin = login(api)["accessToken"]
    add_user(api, admin, "erin")
    one, two = login(api, "erin", PASSWORD), login(api, "erin", PASSWORD)
    change = """mutation($old: String!, $new: String!) {
      changePassword(currentPassword: $old, newPassword: $new) }"""
    wrong = api.post(
        change, {"old": "nope", "new": "another-password"}, token=one["accessToken"]
    )
    assert refused(wrong) == "BAD_USER_INPUT"
    short = api.post(
        change, {"old": PASSWORD, "new": "short"}, token=one["accessToken"]
    )
    assert refused(short) == "BAD_USER_INPUT"
    assert ok(
        api.post(
            change,
            {"old": PASSWORD, "new": "another-password"},
            token=one["accessToken"],
        )
    )
    for session in (one, two):
        assert refused(api.post(ME, token=session["accessToken"])) == "UNAUTHENTICATED"
        assert refused(api.post(REFRESH, {"token": session["refreshToken"]})) == (
            "UNAUTHENTICATED"
        )
    assert refused(api.post(LOGIN, {"username": "erin", "password": PASSWORD})) == (
        "UNAUTHENTICATED"
    )
    assert login(api, "erin", "another-password")


def test_a_revocation_reaches_another_replica_within_the_cache_ttl(
    make_api, database_url
) -> None:
    clock = Clock()
    shared = {"database_url": database_url, "auth_cache_ttl_seconds": 30}
    one = make_api(clock=clock, **shared)
    two = make_api(clock=clock, **shared)
    tokens = login(one)
    assert ok(two.post(ME, token=tokens["accessToken"]))  # two caches the session
    ok(one.post(LOGOUT, token=tokens["accessToken"]))
    # At once where it happened; on the other replica, once its cache expires.
    assert refused(one.post(ME, token=tokens["accessToken"])) == "UNAUTHENTICATED"
    clock.advance(29)
    assert ok(two.post(ME, token=tokens["accessToken"]))
    clock.advance(1)
    assert refused(two.post(ME, token=tokens["accessToken"])) == "UNAUTHENTICATED"


def test_disabling_a_user_ends_their_sessions(make_api, database_url) -> None:
    api = make_api(database_url=database_url)
    admin = login(api)["accessToken"]
    frank = add_user(api, admin, "frank")
    assert ok(api.post(SUMMARIZE, token=frank))
    ok(api.post(UPDATE_USER, {"username": "frank", "disabled": True}, token=admin))
    assert refused(api.post(SUMMARIZE, token=frank)) == "UNAUTHENTICATED"
    ok(api.post(UPDATE_USER, {"username": "frank", "disabled": False}, token=admin))
    # Enabled again, they log in again: the old session stays ended.
    assert refused(api.post(SUMMARIZE, token=frank)) == "UNAUTHENTICATED"
    assert login(api, "frank", PASSWORD)


def test_created_users_are_users_unless_made_admins(api) -> None:
    admin = login(api)["accessToken"]
    result = ok(
        api.post(CREATE_USER, {"username": "gina", "password": PASSWORD}, token=admin)
    )
    assert result["createUser"]["role"] == "USER"
