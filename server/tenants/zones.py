"""Each tenant's row and time zone, read once per process: dates, `today` and business
hours are the tenant's, not the server's; /webchat's handshake reads the tenant's
widget origins and abuse limits from here, not from the database each time. A change
through TenantSettings forgets the tenant at once in its own process, and every other
process forgets it when the bus brings the `settings` news (or all tenants on a gap:
server/routing/service.py, the process's one listener for settings news)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from server.core.errors import Refused
from server.storage import repository as repo
from server.storage.db import Database


class TenantZones:
    def __init__(self, db: Database):
        self.db = db
        self._zones: dict[str, ZoneInfo] = {}
        self._rows: dict[str, dict] = {}  # tenants that exist (never one that does not)
        self._forgotten = 0  # forgets so far: a read begun before one is not kept

    async def zone(self, tenant: str) -> ZoneInfo:
        """The tenant's zone; `forbidden` for a tenant that does not exist (a token of
        a tenant since removed, or never made)."""
        zone = self._zones.get(tenant)
        if zone is None:
            row = await self.row(tenant)
            if row is None:
                raise Refused("forbidden", f"tenant {tenant!r} does not exist")
            zone = self._zones[tenant] = ZoneInfo(row["timezone"])
        return zone

    def cached(self, tenant: str) -> dict | None:
        """The tenant's row if this process has it, without reading the database."""
        return self._rows.get(tenant)

    async def row(self, tenant: str) -> dict | None:
        """The tenant's row (None: no such tenant, which is not remembered)."""
        row = self._rows.get(tenant)
        if row is None:
            forgotten = self._forgotten
            async with self.db.read() as conn:
                row = await repo.get_tenant(conn, tenant)
            if row is not None and forgotten == self._forgotten:
                self._rows[tenant] = row
        return row

    def forget(self, tenant: str) -> None:
        self._forgotten += 1
        self._zones.pop(tenant, None)
        self._rows.pop(tenant, None)

    def forget_all(self) -> None:
        self._forgotten += 1
        self._zones.clear()
        self._rows.clear()
