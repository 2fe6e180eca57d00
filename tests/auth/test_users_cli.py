"""`python -m gptmini_graphql users …`, as an operator runs it, against the
database a server uses: on SQLite and (with DATABASE_URL) on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.auth.accounts import LOGIN, ME, PASSWORD, login, ok, refused


@pytest.fixture
def users(database_url):
    def run(*args: str, password: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "gptmini_graphql", "users", *args],
            input=None if password is None else password + "\n",
            env={**os.environ, "DATABASE_URL": database_url},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def _listed(users) -> list[list[str]]:
    result = users("list")
    assert result.returncode == 0, result.stderr
    return [line.split()[:3] for line in result.stdout.splitlines()[1:]]


def test_an_operator_manages_users_a_server_sees(users, make_api, database_url) -> None:
    assert users("add", "pat", "--role", "admin", password=PASSWORD).returncode == 0
    assert users("add", "quinn", password=PASSWORD).returncode == 0
    assert _listed(users) == [["pat", "admin", "enabled"], ["quinn", "user", "enabled"]]

    # A server on that database: no seed user (there are users), these work.
    api = make_api(database_url=database_url)
    quinn = login(api, "quinn", PASSWORD)
    assert ok(api.post(ME, token=quinn["accessToken"]))["me"]["role"] == "USER"
    assert refused(api.post(LOGIN, {"username": "test_user", "password": "1234"})) == (
        "UNAUTHENTICATED"
    )

    assert users("set-role", "quinn", "admin").returncode == 0
    assert users("disable", "quinn").returncode == 0
    assert _listed(users)[1] == ["quinn", "admin", "disabled"]
    assert refused(api.post(LOGIN, {"username": "quinn", "password": PASSWORD})) == (
        "UNAUTHENTICATED"
    )
    assert users("enable", "quinn").returncode == 0
    assert users("set-password", "quinn", password="brand-new-password").returncode == 0
    assert login(api, "quinn", "brand-new-password")
    assert refused(api.post(LOGIN, {"username": "quinn", "password": PASSWORD})) == (
        "UNAUTHENTICATED"
    )


@pytest.mark.parametrize(
    ("args", "password", "says"),
    [
        (["add", ""], PASSWORD, "cannot be empty"),
        (["add", "u" * 100_000], PASSWORD, "at most 64"),
        (["add", "tab\there"], PASSWORD, "control"),
        (["add", "esc\x1b[31m"], PASSWORD, "control"),
        (["add", "rita", "--role", "root"], PASSWORD, "Unknown role"),
        (["add", "rita"], "short", "at least 8"),
        (["set-role", "rita", "root"], None, "Unknown role"),
        (["disable", "nobody"], None, "No such user"),
        (["set-password", "nobody"], PASSWORD, "No such user"),
    ],
)
def test_bad_input_exits_2_saying_why_and_writes_nothing(
    users, args, password, says
) -> None:
    assert users("add", "rita", password=PASSWORD).returncode == 0
    result = users(*args, password=password)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    assert _listed(users) == [["rita", "user", "enabled"]]
