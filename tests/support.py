"""Helpers shared by the tests: service URLs, backends, ports and condition waits.

Tests never sleep to synchronise: they wait on a condition with `wait_for`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from sqlalchemy.engine import make_url

TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# "1": an unreachable PostgreSQL or Redis fails the test instead of skipping it (CI).
REQUIRE_SERVICES = os.environ.get("SWITCHBOARD_REQUIRE_SERVICES", "") == "1"

SERVICE_TIMEOUT = 2.0

BACKEND_IDS = ("sqlite-memory", "postgresql-redis")


@dataclass(frozen=True)
class Backend:
    """Where a test's server keeps its data and publishes its changes."""

    name: str
    database_url: str
    bus_url: str
    bus_prefix: str

    @property
    def uses_redis(self) -> bool:
        return self.bus_url.startswith(("redis://", "rediss://"))

    def env(self) -> dict[str, str]:
        """Environment variables that point a `switchboard` process at this backend."""
        env = {"DATABASE_URL": self.database_url, "SWITCHBOARD_BUS_PREFIX": self.bus_prefix}
        if self.uses_redis:
            env["REDIS_URL"] = self.bus_url
        return env


def random_suffix() -> str:
    return secrets.token_hex(6)


# --------------------------------------------------------------------------- services


def service_unavailable(reason: str) -> None:
    """Skip the test, or fail it when SWITCHBOARD_REQUIRE_SERVICES=1."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (SWITCHBOARD_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


# One check per service URL per session; the value is None when reachable, else why not.
_reachability: dict[str, str | None] = {}


def asyncpg_dsn(url: str, database: str | None = None) -> str:
    """A SQLAlchemy URL (postgresql+asyncpg://...) as a plain DSN asyncpg accepts."""
    u = make_url(url).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    """The same SQLAlchemy URL, naming another database."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)


async def _check(key: str, probe: Callable[[], Awaitable[Any]]) -> str | None:
    if key not in _reachability:
        try:
            await asyncio.wait_for(probe(), SERVICE_TIMEOUT)
        except Exception as exc:
            _reachability[key] = f"{key} unreachable: {type(exc).__name__}: {exc}"
        else:
            _reachability[key] = None
    return _reachability[key]


async def postgres_problem(url: str = TEST_DATABASE_URL) -> str | None:
    async def probe() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(url), timeout=SERVICE_TIMEOUT)
        await conn.close()

    return await _check(f"PostgreSQL at {make_url(url).render_as_string()}", probe)


async def redis_problem(url: str = TEST_REDIS_URL) -> str | None:
    async def probe() -> None:
        client = _redis_client(url)
        try:
            await client.ping()
        finally:
            await client.aclose()

    return await _check(f"Redis at {url}", probe)


def _redis_client(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, socket_connect_timeout=SERVICE_TIMEOUT, socket_timeout=SERVICE_TIMEOUT
    )


async def require_postgres(url: str = TEST_DATABASE_URL) -> None:
    problem = await postgres_problem(url)
    if problem:
        service_unavailable(problem)


async def require_redis(url: str = TEST_REDIS_URL) -> None:
    problem = await redis_problem(url)
    if problem:
        service_unavailable(problem)


@contextlib.asynccontextmanager
async def fresh_postgres_database(admin_url: str = TEST_DATABASE_URL) -> AsyncIterator[str]:
    """Create `sb_test_<hex>` on admin_url's server, yield its URL, drop it afterwards."""
    name = f"sb_test_{random_suffix()}"
    admin_dsn = asyncpg_dsn(admin_url)
    conn = await asyncpg.connect(admin_dsn, timeout=SERVICE_TIMEOUT)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield with_database(admin_url, name)
    finally:
        conn = await asyncpg.connect(admin_dsn, timeout=SERVICE_TIMEOUT)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def delete_redis_keys(url: str, prefix: str) -> int:
    """Delete every key under prefix; returns how many went."""
    client = _redis_client(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        async for key in client.scan_iter(match=f"{prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await client.unlink(*batch)
    finally:
        await client.aclose()
    return deleted


@contextlib.asynccontextmanager
async def redis_prefix_scope(url: str = TEST_REDIS_URL) -> AsyncIterator[str]:
    """Yield a fresh key/channel prefix `sbtest:<hex>:`; its keys are deleted afterwards."""
    prefix = f"sbtest:{random_suffix()}:"
    try:
        yield prefix
    finally:
        await delete_redis_keys(url, prefix)


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe(predicate: Callable[..., Any]) -> str:
    return getattr(predicate, "__qualname__", None) or repr(predicate)


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | None = None,
) -> Any:
    """Poll predicate (sync or async) until it returns something truthy; return that.

    An AssertionError raised by the predicate counts as "not yet"; other exceptions
    propagate. On timeout raises AssertionError naming the predicate and last result.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
        except AssertionError as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            what = message or f"condition {_describe(predicate)}"
            raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")
        await asyncio.sleep(interval)


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str | None = None,
) -> Any:
    """Synchronous `wait_for` for sync tests (e.g. ones driving subprocesses)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = predicate()
        except AssertionError as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        if time.monotonic() >= deadline:
            what = message or f"condition {_describe(predicate)}"
            raise AssertionError(f"{what} not met within {timeout}s (last: {last!r})")
        time.sleep(interval)


class ManualClock:
    """A clock that moves only when told to, firing the timers it passes (server timers
    set with Clock.call_at), so tests can cross a tenant's midnight at once."""

    def __init__(self, now: datetime):
        self._now = now
        self._timers: list[tuple[datetime, int, _ManualTimer]] = []
        self._count = 0

    def now(self) -> datetime:
        return self._now

    def call_at(self, moment: datetime, callback) -> _ManualTimer:
        timer = _ManualTimer(callback)
        self._count += 1
        heapq.heappush(self._timers, (moment, self._count, timer))
        return timer

    def advance(self, delta: timedelta) -> None:
        self._now += delta
        while self._timers and self._timers[0][0] <= self._now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.callback()


class _ManualTimer:
    def __init__(self, callback):
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
