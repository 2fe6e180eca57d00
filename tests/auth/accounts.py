"""GraphQL documents and small helpers the account tests share."""

from __future__ import annotations

from typing import Any

from tests.conftest import API, error_codes

LOGIN = """
mutation Login($username: String!, $password: String!) {
  login(username: $username, password: $password) {
    accessToken refreshToken expiresAt refreshExpiresAt
  }
}
"""
REFRESH = """
mutation Refresh($token: String!) {
  refresh(refreshToken: $token) { accessToken refreshToken }
}
"""
LOGOUT = "mutation($token: String) { logout(refreshToken: $token) }"
ME = "{ me { id username role createdAt rateLimit } }"
SUMMARIZE = '{ summarize(text: "hello") { text } }'
CREATE_USER = """
mutation Create($username: String!, $password: String!, $role: Role! = USER) {
  createUser(username: $username, password: $password, role: $role) {
    id username role disabled
  }
}
"""
UPDATE_USER = """
mutation Update($username: String!, $role: Role, $disabled: Boolean, $rateLimit: String) {
  updateUser(username: $username, role: $role, disabled: $disabled, rateLimit: $rateLimit) {
    username role disabled rateLimit
  }
}
"""
USERS = "{ users { username role disabled } }"
CREATE_KEY = """
mutation Key($name: String!, $expiresAt: DateTime) {
  createApiKey(name: $name, expiresAt: $expiresAt) {
    key apiKey { id name prefix createdAt lastUsedAt expiresAt revokedAt }
  }
}
"""
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(id: $id) { id revokedAt } }"
MY_KEYS = (
    "{ me { apiKeys { id name prefix createdAt lastUsedAt expiresAt revokedAt } } }"
)
PASSWORD = "a-good-long-password"


def login(api: API, username: str = "test_user", password: str = "1234") -> dict:
    result = api.post(LOGIN, {"username": username, "password": password})
    assert "errors" not in result, result
    return result["data"]["login"]


def ok(result: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in result, result
    return result["data"]


def refused(result: dict[str, Any]) -> str:
    """The one error code of a refused operation."""
    codes = error_codes(result)
    assert len(codes) == 1, result
    return codes[0]


def add_user(api: API, admin: str, username: str, role: str = "USER") -> str:
    """A new user's access token."""
    variables = {"username": username, "password": PASSWORD, "role": role}
    ok(api.post(CREATE_USER, variables, token=admin))
    return login(api, username, PASSWORD)["accessToken"]
