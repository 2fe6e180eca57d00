"""The server reads and writes the tables without SQLAlchemy, in the forms
the models define (db/models.py: what Alembic made, and what servers before
this one wrote): rows the models wrote serve requests, and rows the server
wrote read back through the models. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from gptmini_graphql.db.database import Database
from gptmini_graphql.db.models import ApiKey, AuthSession, LedgerRow, User
from tests.auth.accounts import SUMMARIZE, login, ok
from tests.spend.helpers import by_key, usage

T = TypeVar("T")
SECRET = "gm_" + "k" * 43


def _through_the_models(
    database_url: str, act: Callable[[AsyncSession], Awaitable[T]]
) -> T:
    async def run() -> T:
        url = Database(database_url).url.render_as_string(hide_password=False)
        engine = create_async_engine(url)
        try:
            sessions = async_sessionmaker(engine, expire_on_commit=False)
            async with sessions() as session, session.begin():
                return await act(session)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_rows_the_models_wrote_serve_requests(make_api, database_url) -> None:
    api = make_api(database_url=database_url)  # migrated
    now = datetime.now(UTC)
    user_id, key_id = uuid.uuid4(), uuid.uuid4()

    async def add(session: AsyncSession) -> None:
        session.add(
            User(
                id=user_id, username="old", password_hash="-", role="user",
                disabled=False, rate_limit="50/minute", budgets={"usd_per_day": 5},
                created_at=now, updated_at=now,
            )
        )  # fmt: skip
        await session.flush()
        session.add(
            ApiKey(
                id=key_id, user_id=user_id, name="old key", prefix=SECRET[:11],
                key_hash=hashlib.sha256(SECRET.encode()).digest(), created_at=now,
                expires_at=now + timedelta(days=1), budgets={"usd_per_month": 2},
            )
        )  # fmt: skip
        session.add(
            LedgerRow(
                at=now, day=now.date().isoformat(), user_id=user_id,
                api_key_id=key_id, request_id="r", operation=None,
                field="summarize", model="gpt-4o-mini", upstream="openai",
                prompt_tokens=10, completion_tokens=5, cached_tokens=0,
                cost_nano_usd=4500, cached=False, estimated=False, latency_ms=3,
                outcome="ok",
            )
        )  # fmt: skip

    _through_the_models(database_url, add)
    report = usage(api, SECRET, by="API_KEY")  # the key is its caller
    assert report["requests"] == 1 and report["promptTokens"] == 10
    assert by_key(report)[str(key_id)]["costUsd"] == 4.5e-6
    me = ok(api.post("{ me { username rateLimit apiKeys { id name } } }", token=SECRET))
    assert me["me"] == {
        "username": "old",
        "rateLimit": "50/minute",
        "apiKeys": [{"id": str(key_id), "name": "old key"}],
    }


def test_rows_the_server_wrote_read_back_through_the_models(
    make_api, database_url
) -> None:
    api = make_api(database_url=database_url)
    token = login(api)["accessToken"]
    ok(api.post(SUMMARIZE, token=token))
    assert usage(api, token)["requests"] == 1  # the ledger's row is written

    async def read(session: AsyncSession) -> tuple[User, AuthSession, LedgerRow]:
        user = await session.scalar(select(User).where(User.username == "test_user"))
        assert user is not None
        auth_session = await session.scalar(
            select(AuthSession).where(AuthSession.user_id == user.id)
        )
        row = await session.scalar(
            select(LedgerRow).where(LedgerRow.user_id == user.id)
        )
        assert auth_session is not None and row is not None
        return user, auth_session, row

    user, auth_session, row = _through_the_models(database_url, read)
    assert user.role == "admin" and user.disabled is False
    assert auth_session.revoked_at is None
    assert auth_session.created_at.tzinfo is not None
    assert row.field == "summarize" and row.cached is False and row.api_key_id is None
    assert abs(row.at - datetime.now(UTC)) < timedelta(minutes=5)
    assert row.day == row.at.date().isoformat()
