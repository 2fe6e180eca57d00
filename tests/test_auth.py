"""Login and every way an access token can be wrong, through GraphQL over HTTP.
(Sessions, refresh and API keys: tests/auth/.)"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import jwt
import pytest

from gptmini_graphql.auth.tokens import key_id
from gptmini_graphql.settings import DEFAULT_JWT_SECRET
from tests.conftest import API, LOGIN, Clock, error_codes

SUMMARIZE = '{ summarize(text: "hello") { text } }'


def test_login_returns_a_signed_token_with_the_required_claims(make_api) -> None:
    api = make_api(jwt_ttl_seconds=600)
    before = int(time.time())
    result = api.post(LOGIN, {"username": "test_user", "password": "1234"})
    login = result["data"]["login"]
    claims = jwt.decode(login["accessToken"], DEFAULT_JWT_SECRET, algorithms=["HS256"])
    me = api.post("{ me { id username } }", token=login["accessToken"])["data"]["me"]
    assert me["username"] == "test_user"
    assert claims["sub"] == me["id"]
    assert claims["sid"]
    assert jwt.get_unverified_header(login["accessToken"])["kid"] == key_id(
        DEFAULT_JWT_SECRET
    )
    assert before - 1 <= claims["iat"] <= before + 1
    assert claims["exp"] == claims["iat"] + 600
    assert len(claims["jti"]) >= 16
    assert login["expiresIn"] == 600
    assert datetime.fromisoformat(login["expiresAt"]) == datetime.fromtimestamp(
        claims["exp"], UTC
    )


def test_each_token_has_its_own_id(api: API) -> None:
    first, second = api.login(), api.login()
    assert (
        jwt.decode(first, options={"verify_signature": False})["jti"]
        != jwt.decode(second, options={"verify_signature": False})["jti"]
    )


def test_the_user_and_password_come_from_settings(make_api) -> None:
    api = make_api(fake_username="alice", fake_password="s3cret-passphrase")
    assert api.login("alice", "s3cret-passphrase")


@pytest.mark.parametrize(
    ("username", "password"),
    [("test_user", "wrong"), ("nobody", "1234"), ("", ""), ("test_user", "1234 ")],
)
def test_wrong_credentials_give_one_indistinguishable_error(
    api: API, username: str, password: str
) -> None:
    result = api.post(LOGIN, {"username": username, "password": password})
    assert result["data"] is None
    assert result["errors"][0]["message"] == "Invalid username or password."
    assert error_codes(result) == ["UNAUTHENTICATED"]


def test_login_attempts_are_limited_per_address(make_api) -> None:
    api = make_api(login_rate_limit="3/minute")
    for name in ("a", "b", "c"):
        api.post(LOGIN, {"username": name, "password": "guess"})
    # Another username, the same client address: still refused.
    result = api.post(LOGIN, {"username": "test_user", "password": "1234"})
    assert error_codes(result) == ["RATE_LIMITED"]


def test_a_valid_token_opens_the_llm_fields(api: API, token: str) -> None:
    result = api.post(SUMMARIZE, token=token)
    assert result["data"]["summarize"]["text"] == "A short answer."


def _forge(
    claims: dict, key: str = DEFAULT_JWT_SECRET, algorithm: str = "HS256"
) -> str:
    return jwt.encode(claims, key, algorithm, headers={"kid": key_id(key)})


def _claims(**overrides) -> dict:
    now = int(time.time())
    return {
        "sub": "0b0c9d0e-5f0a-4b7e-8c2d-1e3f4a5b6c7d",
        "sid": "1b0c9d0e-5f0a-4b7e-8c2d-1e3f4a5b6c7d",
        "iat": now,
        "exp": now + 600,
        "jti": "abc",
    } | overrides


def _unsigned(claims: dict) -> str:
    def part(value: dict) -> str:
        return (
            base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()
        )

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


BAD_TOKENS = {
    "expired": _forge(
        _claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)
    ),
    "tampered": _forge(_claims())[:-4] + "AAAA",
    "wrong secret": _forge(_claims(), key="another-secret-that-is-long-enough-xx"),
    "no kid": jwt.encode(_claims(), DEFAULT_JWT_SECRET, "HS256"),
    "a session that does not exist": _forge(_claims()),
    "sub not an id": _forge(_claims(sub="test_user")),
    "alg none": _unsigned(_claims()),
    "wrong algorithm": _forge(_claims(), algorithm="HS512"),
    "malformed": "not.a.jwt",
    "missing jti": _forge({k: v for k, v in _claims().items() if k != "jti"}),
    "missing sub": _forge({k: v for k, v in _claims().items() if k != "sub"}),
    "missing sid": _forge({k: v for k, v in _claims().items() if k != "sid"}),
    "empty sub": _forge(_claims(sub="")),
}


@pytest.mark.parametrize("name", BAD_TOKENS)
def test_bad_tokens_are_unauthenticated(api: API, name: str) -> None:
    result = api.post(SUMMARIZE, token=BAD_TOKENS[name])
    assert error_codes(result) == ["UNAUTHENTICATED"]
    assert result["data"] is None
    assert api.upstream.requests == []


def test_an_expired_token_says_so(make_api) -> None:
    clock = Clock()
    api = make_api(clock=clock, jwt_ttl_seconds=600)
    token = api.login()
    clock.advance(601)
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["UNAUTHENTICATED"]
    assert "expired" in result["errors"][0]["message"]


@pytest.mark.parametrize("header", [None, "Basic dGVzdDoxMjM0", "Bearer", "Bearer   "])
def test_missing_or_non_bearer_authorization_is_unauthenticated(
    api: API, header: str | None
) -> None:
    headers = {"Authorization": header} if header is not None else {}
    result = api.post(SUMMARIZE, headers=headers)
    assert error_codes(result) == ["UNAUTHENTICATED"]


def test_a_client_with_a_bad_token_can_still_log_in(api: API) -> None:
    result = api.post(
        LOGIN,
        {"username": "test_user", "password": "1234"},
        token=BAD_TOKENS["expired"],
    )
    assert result["data"]["login"]["accessToken"]


def test_responses_never_contain_the_secret_or_password(make_api) -> None:
    api = make_api(
        jwt_secret="a-very-secret-signing-key-of-32-bytes!!", fake_password="pw-9"
    )
    for token in BAD_TOKENS.values():
        text = api.client.post(
            "/graphql",
            json={"query": SUMMARIZE},
            headers={"Authorization": f"Bearer {token}"},
        ).text
        assert "a-very-secret" not in text and "pw-9" not in text
        assert "Traceback" not in text


def test_a_token_that_worked_is_refused_once_it_expires(make_api) -> None:
    # Verified tokens are remembered; their expiry is still checked every time.
    clock = Clock()
    api = make_api(clock=clock, jwt_ttl_seconds=600)
    token = api.login()
    assert error_codes(api.post(SUMMARIZE, token=token)) == []
    clock.advance(599)
    assert error_codes(api.post(SUMMARIZE, token=token)) == []
    clock.advance(1)
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["UNAUTHENTICATED"]
    assert "expired" in result["errors"][0]["message"]


def test_a_previous_secret_still_verifies_while_the_new_one_signs(
    make_api, tmp_path
) -> None:
    old, new = "old-secret-" + "o" * 32, "new-secret-" + "n" * 32
    database = f"sqlite:///{tmp_path}/shared.sqlite3"
    before = make_api(jwt_secret=old, database_url=database)
    token = before.login()
    after = make_api(jwt_secret=new, jwt_previous_secrets=old, database_url=database)
    assert error_codes(after.post(SUMMARIZE, token=token)) == []
    fresh = after.login()
    assert jwt.get_unverified_header(fresh)["kid"] == key_id(new)
    jwt.decode(fresh, new, algorithms=["HS256"])  # signed with the new one
    # Once the old secret is dropped, its tokens stop working.
    dropped = make_api(jwt_secret=new, database_url=database)
    assert error_codes(dropped.post(SUMMARIZE, token=token)) == ["UNAUTHENTICATED"]
    assert error_codes(dropped.post(SUMMARIZE, token=fresh)) == []
