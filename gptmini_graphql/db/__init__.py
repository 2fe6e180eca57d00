"""The database: users, API keys, sessions and the usage ledger.

SQLite by default, PostgreSQL by URL. Requests speak SQL to the driver
(aiosqlite or asyncpg: database.py); the tables are SQLAlchemy models
(models.py) made by Alembic migrations, loaded only to migrate (migrate.py).
"""
