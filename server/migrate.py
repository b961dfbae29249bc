"""Create or upgrade the schema with Alembic (`switchboard migrate`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def migrate(database_url: str) -> None:
    """Upgrade to the newest revision. Blocking: call it outside the event loop (or in
    a thread), since Alembic's environment runs its own loop."""
    command.upgrade(alembic_config(database_url), "head")
