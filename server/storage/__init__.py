"""The database: the engine chosen by URL (SQLite embedded, PostgreSQL), the one place
a transaction commits (`Database.write`), the schema and its Alembic migrations, and
thin repositories that never commit. May import: `core`, the state machine."""
