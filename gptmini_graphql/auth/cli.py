"""`python -m gptmini_graphql users …` and `db upgrade`: what an operator does
from a shell, against the database DATABASE_URL names.

Passwords are read from the terminal (asked twice) or, when standard input
is not one, from its first line: never from the command line, where `ps`
and shell history would show them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
import time
from collections.abc import Awaitable, Callable

from gptmini_graphql.auth.users import UserInfo, UserStore
from gptmini_graphql.db.database import Database
from gptmini_graphql.errors import BadUserInput
from gptmini_graphql.settings import Settings


def add_parsers(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    users = commands.add_parser("users", help="manage users")
    actions = users.add_subparsers(dest="users_command", required=True)
    add = actions.add_parser(
        "add", help="add a user (password from the terminal or stdin)"
    )
    add.add_argument("username")
    add.add_argument("--role", default="user", help="admin or user (default)")
    actions.add_parser("list", help="list users")
    for name, text in (
        ("disable", "disable a user: sessions end, keys stop working"),
        ("enable", "enable a disabled user"),
        ("set-password", "set a user's password (their sessions end)"),
    ):
        actions.add_parser(name, help=text).add_argument("username")
    role = actions.add_parser("set-role", help="make a user an admin or a user")
    role.add_argument("username")
    role.add_argument("role", help="admin or user")

    db = commands.add_parser("db", help="the database")
    db_actions = db.add_subparsers(dest="db_command", required=True)
    db_actions.add_parser("upgrade", help="run the migrations up to head")


def run_db(args: argparse.Namespace) -> int:
    async def upgrade() -> None:
        db = Database(Settings().database_url)
        try:
            await db.migrate()
            print(f"{db.description}: migrated to head")
        finally:
            await db.aclose()

    asyncio.run(upgrade())
    return 0


def run_users(args: argparse.Namespace) -> int:
    settings = Settings()
    command = args.users_command
    # Read before the database opens: a mistyped confirmation changes nothing.
    try:
        password = _password() if command in ("add", "set-password") else ""
    except BadUserInput as error:
        print(error.message, file=sys.stderr)
        return 2

    async def act(users: UserStore) -> None:
        if command == "add":
            user = await users.create(args.username, password, args.role)
            print(f"added {user.username} ({user.role.value})")
        elif command == "list":
            _print_table(await users.all())
        elif command in ("disable", "enable"):
            await users.update(args.username, disabled=command == "disable")
            print(f"{command}d {args.username}")
        elif command == "set-password":
            await users.set_password(args.username, password)
            print(f"password set for {args.username}; their sessions have ended")
        elif command == "set-role":
            user = await users.update(args.username, role=args.role)
            print(f"{user.username} is now {user.role.value}")

    try:
        asyncio.run(_with_users(settings, act))
    except BadUserInput as error:
        print(error.message, file=sys.stderr)
        return 2
    return 0


async def _with_users(
    settings: Settings, act: Callable[[UserStore], Awaitable[None]]
) -> None:
    db = Database(settings.database_url)
    try:
        if settings.database_migrate_on_start:
            await db.migrate()
        await act(UserStore(db, time.time))
    finally:
        await db.aclose()


def _password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise BadUserInput("The passwords differ; nothing changed.")
    return first


def _print_table(users: list[UserInfo]) -> None:
    rows = [("USERNAME", "ROLE", "STATUS", "CREATED", "RATE LIMIT")]
    rows += [
        (
            user.username,
            user.role.value,
            "disabled" if user.disabled else "enabled",
            user.created_at.strftime("%Y-%m-%d %H:%M"),
            user.rate_limit or "default",
        )
        for user in users
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip()
        )
