"""The database: users, API keys and sessions (the usage ledger will join them).

SQLite by default, PostgreSQL by URL; SQLAlchemy 2 (async) over aiosqlite or
asyncpg, and every table made by an Alembic migration.
"""
