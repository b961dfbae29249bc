"""The shared fixtures and helpers themselves work."""

from __future__ import annotations

import socket
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from tests.support import (
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    Backend,
    asyncpg_dsn,
    free_port,
    fresh_postgres_database,
    redis_prefix_scope,
    require_postgres,
    wait_for,
    wait_until,
)


async def _fetchval(url: str, query: str, *args: object) -> object:
    conn = await asyncpg.connect(asyncpg_dsn(url), timeout=2)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def test_backend_is_usable(backend: Backend, tmp_path: Path) -> None:
    assert backend.bus_prefix.startswith("sbtest:") and backend.bus_prefix.endswith(":")
    if backend.name == "sqlite-memory":
        assert backend.database_url.startswith("sqlite+aiosqlite:///")
        db_path = Path(backend.database_url.removeprefix("sqlite+aiosqlite:///"))
        assert db_path.is_absolute() and db_path.is_relative_to(tmp_path)
        assert backend.bus_url == "memory://"
        assert "REDIS_URL" not in backend.env()
        return
    assert backend.name == "postgresql-redis"
    assert backend.database_url.startswith("postgresql+asyncpg://")
    assert "PostgreSQL" in await _fetchval(backend.database_url, "select version()")
    name = await _fetchval(backend.database_url, "select current_database()")
    assert name.startswith("sb_test_")
    tables = await _fetchval(
        backend.database_url,
        "select count(*) from information_schema.tables where table_schema = 'public'",
    )
    assert tables == 0
    assert backend.bus_url == TEST_REDIS_URL
    assert backend.env()["REDIS_URL"] == TEST_REDIS_URL
    client = aioredis.Redis.from_url(backend.bus_url)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_postgres_url_is_a_fresh_postgresql_database(postgres_url: str) -> None:
    assert "PostgreSQL" in await _fetchval(postgres_url, "select version()")
    assert (await _fetchval(postgres_url, "select current_database()")).startswith("sb_test_")
    await _fetchval(postgres_url, "create table t (id int)")  # ours to write in


@pytest.mark.services
async def test_fresh_database_is_dropped_afterwards() -> None:
    await require_postgres()
    async with fresh_postgres_database(TEST_DATABASE_URL) as url:
        name = await _fetchval(url, "select current_database()")
        exists = "select count(*) from pg_database where datname = $1"
        assert await _fetchval(TEST_DATABASE_URL, exists, name) == 1
        conn = await asyncpg.connect(asyncpg_dsn(url))  # left open: FORCE must cope
    try:
        assert await _fetchval(TEST_DATABASE_URL, exists, name) == 0
    finally:
        await conn.close()


async def test_redis_prefixes_are_isolated_and_cleaned(redis_url: str, redis_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with redis_prefix_scope(redis_url) as other:
            assert other != redis_prefix
            await client.set(f"{redis_prefix}k", "mine")
            await client.set(f"{other}k", "theirs")
            await client.set(f"{other}k2", "theirs")
            mine = [k async for k in client.scan_iter(match=f"{redis_prefix}*")]
            theirs = [k async for k in client.scan_iter(match=f"{other}*")]
            assert mine == [f"{redis_prefix}k".encode()]
            assert sorted(theirs) == [f"{other}k".encode(), f"{other}k2".encode()]
        assert [k async for k in client.scan_iter(match=f"{other}*")] == []
        assert await client.get(f"{redis_prefix}k") == b"mine"
    finally:
        await client.aclose()


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


async def test_wait_for_sync_and_async_predicates() -> None:
    calls = []

    def sync_pred() -> int | None:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else None

    assert await wait_for(sync_pred) == 3

    async def async_pred() -> str:
        return "yes"

    assert await wait_for(async_pred) == "yes"

    def asserting() -> bool:
        assert len(calls) >= 5
        return True

    async def bump() -> bool:
        calls.append(1)
        return asserting()

    assert await wait_for(bump)


async def test_wait_for_times_out_with_a_message() -> None:
    with pytest.raises(AssertionError, match=r"queue drained not met within 0\.05s"):
        await wait_for(lambda: False, timeout=0.05, message="queue drained")


def test_wait_until_sync() -> None:
    seen = []
    assert wait_until(lambda: seen.append(1) or len(seen) > 2) is True
    with pytest.raises(AssertionError, match="not met within"):
        wait_until(lambda: 0, timeout=0.05)
