"""Create or upgrade the schema with Alembic (`switchboard migrate`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from server.storage.db import private_sqlite_file

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str) -> None:
    """Upgrade to the newest revision. Blocking: call it outside the event loop (or in
    a thread), since Alembic's environment runs its own loop."""
    private_sqlite_file(database_url)
    command.upgrade(alembic_config(database_url), "head")
    asyncio.run(_analyze(database_url))


async def _analyze(database_url: str) -> None:
    """Fresh planner statistics, so that PostgreSQL looks rows up by their keys from
    the start (autovacuum keeps them fresh afterwards; it must be on)."""
    engine = create_async_engine(database_url)
    try:
        if engine.dialect.name == "postgresql":
            async with engine.begin() as conn:
                await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()
