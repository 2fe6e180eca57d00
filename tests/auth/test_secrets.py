"""Nothing secret in an error or in the log: the password, the refresh
tokens and the API key are searched for in everything the server wrote."""

from __future__ import annotations

from tests.auth.accounts import (
    CREATE_KEY,
    LOGIN,
    LOGOUT,
    REFRESH,
    SUMMARIZE,
    login,
    ok,
)

PASSWORD = "correct-horse-battery-staple"


def test_no_password_refresh_token_or_key_in_responses_or_logs(make_api, capfd) -> None:
    api = make_api(fake_password=PASSWORD, log_level="DEBUG")
    capfd.readouterr()
    bodies = []

    def post(query, variables=None, token=None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = api.client.post(
            "/graphql", json={"query": query, "variables": variables}, headers=headers
        )
        if "errors" in response.json():  # the others carry tokens by design
            bodies.append(response.text)
        return response.json()

    tokens = login(api, "test_user", PASSWORD)
    refresh = tokens["refreshToken"]
    key = ok(post(CREATE_KEY, {"name": "ci"}, token=tokens["accessToken"]))[
        "createApiKey"
    ]["key"]
    ok(post(SUMMARIZE, token=key))
    post(LOGIN, {"username": "test_user", "password": PASSWORD + "x"})
    post(LOGIN, {"username": PASSWORD, "password": PASSWORD})
    rotated = ok(post(REFRESH, {"token": refresh}))["refresh"]["refreshToken"]
    post(REFRESH, {"token": refresh})  # reuse: the family is revoked, and logged
    post(LOGOUT, {"token": rotated})
    post(SUMMARIZE, token=key[:-2] + "xx")  # a wrong key
    post(SUMMARIZE, token=refresh)  # a refresh token where an access token goes
    api.stop()  # shutdown's lines too
    log = capfd.readouterr()
    written = log.out + log.err
    assert "graphql operation" in written  # the log was captured
    for secret in (PASSWORD, refresh, rotated, key, key[3:]):
        assert secret not in written
        assert all(secret not in body for body in bodies)
    assert len(bodies) == 5
    assert "Traceback" not in written
