"""Alembic's environment: always handed a connection by db/migrate.py
(from the app's start or the `db upgrade` command), so it never opens its own."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from gptmini_graphql.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "Run migrations with `python -m gptmini_graphql db upgrade`, not alembic."
    )

if connection.dialect.name == "postgresql":
    # Replicas starting together: one migrates, the others wait, then find
    # nothing left to do. (Released when the transaction ends.)
    connection.execute(text("SELECT pg_advisory_xact_lock(7461330613)"))

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite alters tables by copying them; batch mode writes that for us.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
