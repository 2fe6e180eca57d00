"""Login and every way a token can be wrong, through GraphQL over HTTP."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import jwt
import pytest

from gptmini_graphql.settings import DEFAULT_JWT_SECRET
from tests.conftest import API, LOGIN, error_codes

SUMMARIZE = '{ summarize(text: "hello") { text } }'


def test_login_returns_a_signed_token_with_the_required_claims(make_api) -> None:
    api = make_api(jwt_ttl_seconds=600)
    before = int(time.time())
    result = api.post(LOGIN, {"username": "test_user", "password": "1234"})
    login = result["data"]["login"]
    claims = jwt.decode(login["accessToken"], DEFAULT_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "test_user"
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
    return jwt.encode(claims, key, algorithm)


def _claims(**overrides) -> dict:
    now = int(time.time())
    return {"sub": "test_user", "iat": now, "exp": now + 600, "jti": "abc"} | overrides


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
    "alg none": _unsigned(_claims()),
    "wrong algorithm": _forge(_claims(), algorithm="HS512"),
    "malformed": "not.a.jwt",
    "missing jti": _forge({k: v for k, v in _claims().items() if k != "jti"}),
    "missing sub": _forge({k: v for k, v in _claims().items() if k != "sub"}),
    "empty sub": _forge(_claims(sub="")),
}


@pytest.mark.parametrize("name", BAD_TOKENS)
def test_bad_tokens_are_unauthenticated(api: API, name: str) -> None:
    result = api.post(SUMMARIZE, token=BAD_TOKENS[name])
    assert error_codes(result) == ["UNAUTHENTICATED"]
    assert result["data"] is None
    assert api.upstream.requests == []


def test_an_expired_token_says_so(api: API) -> None:
    result = api.post(SUMMARIZE, token=BAD_TOKENS["expired"])
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


def test_a_token_that_worked_is_refused_once_it_expires(api: API) -> None:
    # Verified tokens are remembered; their expiry is still checked every time.
    token = _forge(_claims(exp=int(time.time()) + 2))
    assert error_codes(api.post(SUMMARIZE, token=token)) == []
    time.sleep(2.5)
    result = api.post(SUMMARIZE, token=token)
    assert error_codes(result) == ["UNAUTHENTICATED"]
    assert "expired" in result["errors"][0]["message"]
