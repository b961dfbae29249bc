"""Saved views under their watchers: a subscription by a saved view's id follows the
view when someone else changes it (docs/security.md, "Views under their watchers").

After a PATCH or DELETE commits, the views API posts news of it on the bus
(`{"rows": [], "views": [view_news(...)]}`), so every process hears of it. Each process
keeps here who watches which saved view, with the *shape* the watcher subscribed to (a
hash of name, filters, columns and sort) and decides per watcher:

* the view is gone: `unsubscribed` (reason `view_deleted`);
* the watcher may no longer see it (shared turned private, and not its owner):
  `unsubscribed` (reason `forbidden`);
* its shape differs from the watcher's: `resync` (reason `view_changed`); subscribing
  again gives the new definition's snapshot.

The bus may lose news (a Gap, or a publish dropped without one), and news may pass a
subscribe that read the view just before the change. So the news is only the fast
path: every CHECK_INTERVAL_S (and at once after a Gap) the process reads the watched
views back from the database (one primary-key query per tenant, only while someone
watches) and decides the same way. A missed notice costs at most that interval.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from typing import Any, Protocol

from sqlalchemy import select

from server.live.saved_views import may_see
from server.storage import models as m
from server.storage.db import Database

log = logging.getLogger("switchboard.live")

CHECK_INTERVAL_S = 2.0  # the longest a watcher follows an old view when its news is lost


class Watcher(Protocol):
    """The connection side: ends one subscription with a frame of `kind` and `reason`."""

    def subscription_over(self, sub_id: str, kind: str, reason: str) -> None: ...


def view_shape(row: dict) -> str:
    """What a watcher's snapshot depends on: name, filters, columns and sort."""
    text = json.dumps(
        [row["name"], row["filters"], row["columns"], row["sort"]],
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def view_news(row: dict, deleted: bool = False) -> dict[str, Any]:
    """The bus news of a committed change to a saved view."""
    if deleted:
        return {"id": row["id"], "deleted": True}
    return {
        "id": row["id"],
        "deleted": False,
        "visibility": row["visibility"],
        "owner": row["owner"],
        "shape": view_shape(row),
    }


class Watch:
    __slots__ = ("role", "shape", "sub", "user", "view_id")

    def __init__(self, sub, view_id: str, user: str, role: str, shape: str):
        self.sub, self.view_id, self.user, self.role, self.shape = sub, view_id, user, role, shape


class WatchedViews:
    """Who watches which saved view in this process."""

    def __init__(self, db: Database):
        self.db = db
        self.by_view: dict[tuple[str, str], dict[Any, Watch]] = {}  # (tenant, view) -> sub -> watch
        self.of_sub: dict[Any, tuple[str, str]] = {}
        self.wake = asyncio.Event()

    def watch(self, sub, view_id: str, user: str, role: str, row: dict) -> None:
        key = (sub.tenant, view_id)
        self.by_view.setdefault(key, {})[sub] = Watch(sub, view_id, user, role, view_shape(row))
        self.of_sub[sub] = key

    def forget(self, sub) -> None:
        key = self.of_sub.pop(sub, None)
        if key is None:
            return
        watches = self.by_view.get(key)
        if watches is not None:
            watches.pop(sub, None)
            if not watches:
                del self.by_view[key]

    def on_news(self, tenant: str, news: list) -> None:
        for item in news:
            if not isinstance(item, dict) or (tenant, item.get("id")) not in self.by_view:
                continue
            self.decide(tenant, item["id"], None if item.get("deleted") else item)

    def decide(self, tenant: str, view_id: str, state: dict | None, among=None) -> None:
        """End the watches the view's state (None: deleted) no longer allows (of those
        `among`, when given)."""
        for watch in list(self.by_view.get((tenant, view_id), {}).values()):
            if among is not None and watch not in among:
                continue
            if state is None:
                self._end(watch, "unsubscribed", "view_deleted")
            elif not may_see(state["visibility"], state["owner"], watch.user, watch.role):
                self._end(watch, "unsubscribed", "forbidden")
            elif state["shape"] != watch.shape:
                self._end(watch, "resync", "view_changed")

    def _end(self, watch: Watch, kind: str, reason: str) -> None:
        self.forget(watch.sub)
        try:
            watch.sub.receiver.subscription_over(watch.sub.id, kind, reason)
        except Exception:
            log.exception("ending a view's subscription failed")

    async def run(self) -> None:
        """Read the watched views back every CHECK_INTERVAL_S, or at once after a Gap."""
        while True:
            try:
                async with asyncio.timeout(CHECK_INTERVAL_S):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()
            try:
                await self.check()
            except Exception as exc:  # the database is down: the next interval retries
                log.warning("checking watched views failed: %r", exc)

    async def check(self) -> None:
        by_tenant: dict[str, set[str]] = {}
        for tenant, view_id in list(self.by_view):
            by_tenant.setdefault(tenant, set()).add(view_id)
        # Only watches made before the read: a later one may have read a newer view.
        before = {watch for watches in self.by_view.values() for watch in watches.values()}
        table = m.views
        for tenant, ids in by_tenant.items():
            async with self.db.read() as conn:
                rows = await conn.execute(
                    select(table).where(table.c.tenant_id == tenant, table.c.id.in_(sorted(ids)))
                )
                found = {row.id: dict(row._mapping) for row in rows}
            for view_id in ids:
                row = found.get(view_id)
                self.decide(tenant, view_id, None if row is None else view_news(row), before)
