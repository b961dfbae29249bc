"""Backend fixtures shared by every test.

`backend` runs a test once per backend pair: `sqlite-memory` (a SQLite file under
tmp_path and the in-process bus) and `postgresql-redis` (a brand-new PostgreSQL
database on TEST_DATABASE_URL's server and a private key prefix on TEST_REDIS_URL).
An unreachable service skips the test, or fails it with SWITCHBOARD_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.browser_support import browser, module_chromium
from tests.support import (
    BACKEND_IDS,
    REQUIRE_SERVICES,
    TEST_DATABASE_URL,
    TEST_REDIS_URL,
    Backend,
    free_port,
    fresh_postgres_database,
    random_suffix,
    redis_prefix_scope,
    require_postgres,
    require_redis,
    wait_for,
    wait_until,
)

__all__ = [
    "REQUIRE_SERVICES",
    "TEST_DATABASE_URL",
    "TEST_REDIS_URL",
    "Backend",
    "browser",
    "free_port",
    "module_chromium",
    "wait_for",
    "wait_until",
]


def _backend_params() -> list:
    return [
        pytest.param(name, id=name, marks=[pytest.mark.services] if "postgresql" in name else [])
        for name in BACKEND_IDS
    ]


SERVICE_FIXTURES = frozenset({"postgres_url", "redis_url", "redis_prefix"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Tests that use a service fixture directly carry the `services` marker too.
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)
        # The shared Chromium answers only on its module's loop (tests/browser_support.py).
        if "browser" in getattr(item, "fixturenames", ()):
            loop = item.get_closest_marker("asyncio")
            if loop is None or loop.kwargs.get("loop_scope") != "module":
                raise pytest.UsageError(f"{item.nodeid} uses `browser`: pytestmark = BROWSER_TESTS")


@pytest.fixture(params=_backend_params())
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite-memory":
        yield Backend(
            name="sqlite-memory",
            database_url=f"sqlite+aiosqlite:///{tmp_path}/switchboard.db",
            bus_url="memory://",
            bus_prefix=f"sbtest:{random_suffix()}:",
        )
        return
    await require_postgres(TEST_DATABASE_URL)
    await require_redis(TEST_REDIS_URL)
    async with (
        fresh_postgres_database(TEST_DATABASE_URL) as database_url,
        redis_prefix_scope(TEST_REDIS_URL) as prefix,
    ):
        yield Backend(
            name="postgresql-redis",
            database_url=database_url,
            bus_url=TEST_REDIS_URL,
            bus_prefix=prefix,
        )


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """URL (postgresql+asyncpg://) of a brand-new database, dropped afterwards."""
    await require_postgres(TEST_DATABASE_URL)
    async with fresh_postgres_database(TEST_DATABASE_URL) as url:
        yield url


@pytest.fixture
async def redis_url() -> str:
    """TEST_REDIS_URL, once Redis answers. Pair it with `redis_prefix` for isolation."""
    await require_redis(TEST_REDIS_URL)
    return TEST_REDIS_URL


@pytest.fixture
async def redis_prefix(redis_url: str) -> AsyncIterator[str]:
    """A fresh `sbtest:<hex>:` prefix; every key under it is deleted afterwards."""
    async with redis_prefix_scope(redis_url) as prefix:
        yield prefix


@pytest.fixture
async def api(backend: Backend, tmp_path: Path):
    """The app on `backend`, migrated, with tenants `acme` and `globex`."""
    from tests.app_support import running_api

    async with running_api(backend, tmp_path / "data") as running:
        yield running
