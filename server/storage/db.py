"""The database: engine by URL, SQLite tuned for the embedded default, transactions.

Writes go through `Database.write()`, the one place a transaction commits, and the
ingest's through `Database.ingest_write()` (on PostgreSQL the same on the bare driver
connection; on SQLite it is write()). On SQLite,
writers of this process queue on an asyncio lock and take the database's write lock
at BEGIN (IMMEDIATE), so no transaction ever fails half-way on a busy upgrade.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from server.core.files import private_dir, private_file
from server.core.text import fold


class Database:
    def __init__(self, url: str, *, pool_size: int = 20):
        self.url = url
        self.dialect = make_url(url).get_backend_name()
        self.engine = _create_engine(url, pool_size)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One transaction that commits when the block ends, or rolls back on error."""
        if self._write_lock is None:
            async with self.engine.begin() as conn:
                yield conn
            return
        async with self._write_lock, self.engine.connect() as conn:
            await conn.execution_options(sqlite_begin="BEGIN IMMEDIATE")
            async with conn.begin():
                yield conn

    @contextlib.asynccontextmanager
    async def ingest_write(self) -> AsyncIterator[AsyncConnection | asyncpg.Connection]:
        """The ingest's transaction, which commits when the block ends. SQLite: write().
        PostgreSQL: the bare asyncpg connection in a transaction of its own, because
        SQLAlchemy's layers (greenlet, cursor, result, its BEGIN on the first
        statement, its COMMIT) cost a group of single events more CPU than its
        statements (bench/f3_inprocess.py). asyncpg's errors come out as SQLAlchemy's
        (IntegrityError, DBAPIError), so callers handle one kind; a connection that
        broke is invalidated, never handed out again."""
        if self.is_sqlite:
            async with self.write() as conn:
                yield conn
            return
        async with self.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            try:
                async with driver.transaction():
                    yield driver
            except asyncpg.PostgresError as error:
                kind = IntegrityError if (error.sqlstate or "").startswith("23") else DBAPIError
                raise kind("ingest transaction", None, error) from error
            except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError) as error:
                # InternalClientError: a connection cut by a database shutdown in the
                # middle of an operation can come back from the pool still "busy"
                # (asyncpg: "another operation is in progress"); it is as broken as a
                # closed one (bench f8 met it in one restart of three).
                await conn.invalidate()
                raise DBAPIError(
                    "ingest transaction", None, error, connection_invalidated=True
                ) from error

    @contextlib.asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A read transaction whose queries all see one moment (PostgreSQL REPEATABLE
        READ; SQLite in WAL mode holds one read snapshot for the transaction)."""
        async with self.engine.connect() as conn:
            if not self.is_sqlite:
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield conn

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Reads with no transaction around them: each statement sees what was
        committed when it started. On PostgreSQL that is autocommit, which saves the
        BEGIN and ROLLBACK round trips a read would otherwise pay (asyncpg's isolation
        level is kept on the client: switching it sends nothing)."""
        async with self.engine.connect() as conn:
            if not self.is_sqlite:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def close(self) -> None:
        await self.engine.dispose()


def private_sqlite_file(url: str) -> None:
    """A SQLite database's file made before SQLite makes it, 0600 in a 0700 directory
    when it makes the directory: SQLite gives its WAL and shared memory files the
    database file's mode, so they are the owner's only too."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        private_file(private_dir(path.parent) / path.name)


def _create_engine(url: str, pool_size: int) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # No ping per checkout (a round trip per transaction): a connection found dead
        # is invalidated on its error, that request answers 503, the next one gets a
        # fresh connection. Overflow connections are closed when they come back, and a
        # new one costs PostgreSQL a backend and every statement a new prepare: 20 kept
        # (10 before) took an R1 run from 488 connections opened to about 200-260.
        return create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False, pool_timeout=10
        )
    private_sqlite_file(url)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, say when a transaction begins (the
        # documented pysqlite recipe), and tune for one writer with many readers.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
        # View filters fold case the same way in SQL and in Python (server/core/text.py).
        dbapi_connection.create_function("sb_fold", 1, _fold, deterministic=True)

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN"))

    return engine


def _fold(value: str | None) -> str | None:
    return None if value is None else fold(value)


class DatabaseUnavailable(Exception):
    """The database could not be reached: the request is answered 503, nothing stored."""


_RETRYABLE = {"40P01", "40001"}  # deadlock detected, serialization failure


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", exc)
    return getattr(orig, "sqlstate", None) or getattr(orig.__cause__, "sqlstate", None)


def is_retryable(exc: BaseException) -> bool:
    """A transaction that lost a race (deadlock, serialisation) and may simply run again."""
    return _sqlstate(exc) in _RETRYABLE


def is_unavailable(exc: BaseException) -> bool:
    """The database cannot be reached, as opposed to a bug or bad data."""
    if isinstance(exc, OSError | TimeoutError | ConnectionError):
        return True
    if getattr(exc, "connection_invalidated", False):
        return True
    state = _sqlstate(exc) or ""
    text_ = str(getattr(exc, "orig", exc)).lower()
    return state.startswith(("08", "57P")) or "connection" in text_ or "unable to open" in text_
