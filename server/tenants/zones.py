"""Each tenant's time zone, read once per process: dates, `today` and business hours
are the tenant's, not the server's."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from server.core.errors import Refused
from server.storage import repository as repo
from server.storage.db import Database


class TenantZones:
    def __init__(self, db: Database):
        self.db = db
        self._zones: dict[str, ZoneInfo] = {}

    async def zone(self, tenant: str) -> ZoneInfo:
        """The tenant's zone; `forbidden` for a tenant that does not exist (a token of
        a tenant since removed, or never made)."""
        zone = self._zones.get(tenant)
        if zone is None:
            async with self.db.read() as conn:
                row = await repo.get_tenant(conn, tenant)
            if row is None:
                raise Refused("forbidden", f"tenant {tenant!r} does not exist")
            zone = self._zones[tenant] = ZoneInfo(row["timezone"])
        return zone

    def forget(self, tenant: str) -> None:
        self._zones.pop(tenant, None)
