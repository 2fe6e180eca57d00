"""API keys: created once with their secret, used like an access token (over
HTTP and in WebSocket connection_init), listed without it, revoked, expired;
on SQLite and (with DATABASE_URL) on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.websockets import WebSocketDisconnect

from tests.auth.accounts import (
    CREATE_KEY,
    ME,
    MY_KEYS,
    REVOKE_KEY,
    SUMMARIZE,
    UPDATE_USER,
    add_user,
    login,
    ok,
    refused,
)
from tests.conftest import Clock


def create_key(api, token: str, name: str = "script", **variables) -> dict:
    return ok(api.post(CREATE_KEY, {"name": name, **variables}, token=token))[
        "createApiKey"
    ]


def test_a_key_is_shown_once_and_works_like_an_access_token(
    make_api, database_url
) -> None:
    api = make_api(database_url=database_url)
    token = login(api)["accessToken"]
    created = create_key(api, token, "nightly report")
    key = created["key"]
    assert key.startswith("gm_") and len(key) >= 3 + 43  # 32 bytes, base64url
    assert key.startswith(created["apiKey"]["prefix"])
    assert ok(api.post(SUMMARIZE, token=key))["summarize"]["text"]
    assert ok(api.post(ME, token=key))["me"]["username"] == "test_user"

    listing = api.client.post(
        "/graphql",
        json={"query": MY_KEYS},
        headers={"Authorization": f"Bearer {token}"},
    ).text
    assert key not in listing and key[len(created["apiKey"]["prefix"]) :] not in listing
    (listed,) = ok(api.post(MY_KEYS, token=token))["me"]["apiKeys"]
    assert listed["name"] == "nightly report"
    assert listed["prefix"] == created["apiKey"]["prefix"]
    assert listed["lastUsedAt"] is not None  # used twice above


def test_a_revoked_key_is_unauthenticated_and_the_error_never_echoes_it(
    make_api, database_url
) -> None:
    api = make_api(database_url=database_url)
    token = login(api)["accessToken"]
    created = create_key(api, token)
    revoked = ok(api.post(REVOKE_KEY, {"id": created["apiKey"]["id"]}, token=token))
    assert revoked["revokeApiKey"]["revokedAt"]
    response = api.client.post(
        "/graphql",
        json={"query": SUMMARIZE},
        headers={"Authorization": f"Bearer {created['key']}"},
    )
    assert refused(response.json()) == "UNAUTHENTICATED"
    assert created["key"] not in response.text
    assert created["key"][3:] not in response.text
    assert api.upstream.requests == []


@pytest.mark.parametrize("key", ["gm_", "gm_" + "A" * 43, "gm_<script>'\""])
def test_unknown_keys_are_unauthenticated_without_an_echo(api, key: str) -> None:
    response = api.client.post(
        "/graphql",
        json={"query": SUMMARIZE},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert refused(response.json()) == "UNAUTHENTICATED"
    assert key[3:] not in response.text or key == "gm_"


def test_a_key_expires_at_its_time(make_api) -> None:
    clock = Clock()
    api = make_api(clock=clock, jwt_ttl_seconds=24 * 3600)
    token = login(api)["accessToken"]
    expires = datetime.fromtimestamp(clock.now, UTC) + timedelta(hours=1)
    key = create_key(api, token, expiresAt=expires.isoformat())["key"]
    assert ok(api.post(SUMMARIZE, token=key))
    clock.advance(3600)
    result = api.post(SUMMARIZE, token=key)
    assert refused(result) == "UNAUTHENTICATED"
    assert "expired" in result["errors"][0]["message"]


def test_an_expiry_in_the_past_or_a_bad_name_is_bad_input(api) -> None:
    token = login(api)["accessToken"]
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    for variables in (
        {"name": "old", "expiresAt": past},
        {"name": ""},
        {"name": "x" * 101},
        {"name": "bell\x07"},
    ):
        assert refused(api.post(CREATE_KEY, variables, token=token)) == (
            "BAD_USER_INPUT"
        )
    assert ok(api.post(MY_KEYS, token=token))["me"]["apiKeys"] == []


def test_a_key_cannot_make_keys_or_change_the_password(api) -> None:
    key = create_key(api, login(api)["accessToken"])["key"]
    assert refused(api.post(CREATE_KEY, {"name": "more"}, token=key)) == "FORBIDDEN"
    change = 'mutation { changePassword(currentPassword: "1234", newPassword: "x" ) }'
    assert refused(api.post(change, token=key)) == "FORBIDDEN"


def test_users_revoke_only_their_own_keys_and_admins_anyones(make_api) -> None:
    api = make_api()
    admin = login(api)["accessToken"]
    hana = add_user(api, admin, "hana")
    ivan = add_user(api, admin, "ivan")
    hanas = create_key(api, hana)
    assert refused(api.post(REVOKE_KEY, {"id": hanas["apiKey"]["id"]}, token=ivan)) == (
        "BAD_USER_INPUT"
    )
    assert refused(api.post(REVOKE_KEY, {"id": "not-an-id"}, token=ivan)) == (
        "BAD_USER_INPUT"
    )
    assert ok(api.post(SUMMARIZE, token=hanas["key"]))
    ok(api.post(REVOKE_KEY, {"id": hanas["apiKey"]["id"]}, token=admin))
    assert refused(api.post(SUMMARIZE, token=hanas["key"])) == "UNAUTHENTICATED"
    # Another user's keys are not theirs to list.
    others = "{ users { username apiKeys { id } } }"
    assert refused(api.post(others, token=ivan)) == "FORBIDDEN"
    listed = ok(api.post(others, token=admin))["users"]
    assert {u["username"]: len(u["apiKeys"]) for u in listed}["hana"] == 1


def test_a_disabled_users_keys_stop_working(make_api, database_url) -> None:
    api = make_api(database_url=database_url)
    admin = login(api)["accessToken"]
    key = create_key(api, add_user(api, admin, "jack"))["key"]
    assert ok(api.post(SUMMARIZE, token=key))
    ok(api.post(UPDATE_USER, {"username": "jack", "disabled": True}, token=admin))
    assert refused(api.post(SUMMARIZE, token=key)) == "UNAUTHENTICATED"


def test_last_use_is_written_at_shutdown_and_survives_a_restart(
    make_api, database_url
) -> None:
    api = make_api(database_url=database_url)
    token = login(api)["accessToken"]
    key = create_key(api, token)["key"]
    ok(api.post(SUMMARIZE, token=key))
    api.stop()
    again = make_api(database_url=database_url)
    (listed,) = ok(again.post(MY_KEYS, token=login(again)["accessToken"]))["me"][
        "apiKeys"
    ]
    assert listed["lastUsedAt"] is not None


SUBSCRIBE = {
    "id": "1",
    "type": "subscribe",
    "payload": {"query": 'subscription { completeStream(prompt: "Hi") { text done } }'},
}


def test_a_key_opens_a_websocket_in_connection_init(make_api, database_url) -> None:
    api = make_api(database_url=database_url)
    created = create_key(api, login(api)["accessToken"])
    with api.client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:
        ws.send_json(
            {
                "type": "connection_init",
                "payload": {"Authorization": f"Bearer {created['key']}"},
            }
        )
        assert ws.receive_json() == {"type": "connection_ack"}
        ws.send_json(SUBSCRIBE)
        events = []
        while (message := ws.receive_json())["type"] == "next":
            events.append(message["payload"]["data"]["completeStream"])
        assert message == {"id": "1", "type": "complete"}
        assert events[-1]["done"] is True


def test_a_revoked_key_is_refused_in_connection_init(api) -> None:
    token = login(api)["accessToken"]
    created = create_key(api, token)
    ok(api.post(REVOKE_KEY, {"id": created["apiKey"]["id"]}, token=token))
    with api.client.websocket_connect(
        "/graphql", subprotocols=["graphql-transport-ws"]
    ) as ws:
        ws.send_json(
            {
                "type": "connection_init",
                "payload": {"Authorization": f"Bearer {created['key']}"},
            }
        )
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
        assert closed.value.code == 4403
        assert created["key"] not in (closed.value.reason or "")


def test_a_revoked_key_stops_on_another_replica_within_the_cache_ttl(
    make_api, database_url
) -> None:
    clock = Clock()
    shared = {"database_url": database_url, "auth_cache_ttl_seconds": 30}
    one = make_api(clock=clock, **shared)
    two = make_api(clock=clock, **shared)
    token = login(one)["accessToken"]
    created = create_key(one, token)
    assert ok(two.post(SUMMARIZE, token=created["key"]))  # two caches the key
    ok(one.post(REVOKE_KEY, {"id": created["apiKey"]["id"]}, token=token))
    assert refused(one.post(SUMMARIZE, token=created["key"])) == "UNAUTHENTICATED"
    clock.advance(29)
    assert ok(two.post(SUMMARIZE, token=created["key"]))
    clock.advance(1)
    assert refused(two.post(SUMMARIZE, token=created["key"])) == "UNAUTHENTICATED"
