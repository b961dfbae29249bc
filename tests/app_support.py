"""A running Switchboard app for integration tests: migrated database, two tenants,
an HTTP client speaking to the app in process, and tokens for every role."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from server.app import Services, build_services, create_app
from server.core.auth import mint_token
from server.core.clock import SYSTEM_CLOCK, Clock
from server.core.settings import Settings
from server.storage.migrate import migrate
from server.tenants.setup import create_tenant
from tests.support import Backend

SECRET = "test-secret-not-for-production-0123456789"
TENANT = "acme"
OTHER_TENANT = "globex"


@dataclass
class Api:
    """The app under test, as its HTTP clients see it."""

    client: httpx.AsyncClient
    services: Services
    backend: Backend
    tenant: str = TENANT
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def token(self, role: str, user: str = "u1", tenant: str | None = None, ttl: int = 3600):
        clock = self.services.clock if self.services is not None else SYSTEM_CLOCK
        return mint_token(SECRET, tenant or self.tenant, role, user, ttl, clock)

    def auth(self, role: str, user: str = "u1", tenant: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, user, tenant)}"}

    def event(self, type_: str, conversation_id: str, occurred_at: str, **data) -> dict:
        """An envelope with a fresh event_id."""
        return {
            "event_id": f"ev-{next(self._ids)}",
            "type": type_,
            "conversation_id": conversation_id,
            "occurred_at": occurred_at,
            "data": data,
        }

    async def post_events(
        self, events: list[dict], role: str = "service", tenant: str | None = None
    ) -> list[dict]:
        response = await self.client.post(
            "/api/v1/events", json={"events": events}, headers=self.auth(role, "svc", tenant)
        )
        assert response.status_code == 200, response.text
        return response.json()["results"]

    async def conversation(
        self, conversation_id: str, role: str = "supervisor", user: str = "sup1"
    ) -> dict:
        response = await self.client.get(
            f"/api/v1/conversations/{conversation_id}", headers=self.auth(role, user)
        )
        assert response.status_code == 200, response.text
        return response.json()


def test_settings(backend: Backend, data_dir: Path, public_url: str | None = None) -> Settings:
    """`public_url`: SWITCHBOARD_PUBLIC_URL, where providers call back (None: unset)."""
    return Settings(
        data_dir=data_dir,
        database_url=backend.database_url,
        bus_url=backend.bus_url,
        bus_prefix=backend.bus_prefix,
        secret=SECRET,
        public_url=public_url,
    )


async def prepare_database(database_url: str) -> None:
    """Migrate (Alembic runs its own loop, so in a thread) and add the two tenants."""
    await asyncio.to_thread(migrate, database_url)
    probe = build_services(
        Settings(
            data_dir=Path("."),
            database_url=database_url,
            bus_url="memory://",
            bus_prefix="",
            secret=SECRET,
        )
    )
    try:
        async with probe.db.write() as conn:
            # The tests play the router themselves (routing tests turn `builtin` on).
            await create_tenant(conn, TENANT, "Europe/Madrid", routing="external")
            await create_tenant(conn, OTHER_TENANT, "America/New_York", routing="external")
    finally:
        await probe.db.close()


@contextlib.asynccontextmanager
async def running_api(
    backend: Backend,
    data_dir: Path,
    clock: Clock = SYSTEM_CLOCK,
    public_url: str | None = "http://testserver",
) -> AsyncIterator[Api]:
    """`public_url`: SWITCHBOARD_PUBLIC_URL, by default the client's own address."""
    await prepare_database(backend.database_url)
    app = create_app(test_settings(backend, data_dir, public_url), clock)
    services: Services = app.state.services
    await services.start()
    try:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield Api(client, services, backend)
    finally:
        await services.stop()
