"""Catch-up and reconciliation: the database is the truth, the bus only carries news.

Every RECONCILE_INTERVAL_S, and at once after a bus Gap (a reconnect, an overflow), this
process reads which rows of the tenants it has windows for were stamped with a change
sequence number above its watermark, and compares their versions with those the bus
brought (LiveViews.versions). A row the bus did not bring (its news was lost in a Redis
outage, dropped by a full outbox, or never sent by a process that died between commit
and publish) makes the windows it may matter to reload; their subscribers get deltas.

The watermark (docs/faults.md). Sequence numbers are taken before commit and commits
become visible out of order, so "the greatest number seen" is not safe. Each pass
records a mark: the greatest number handed out so far (the sequence's last value) and
its snapshot's xmax (every transaction with a smaller id had started by then). A mark
becomes the watermark once every transaction that could hold a number at or below it
has finished: all that had an id below the *next* mark's xmax (a transaction takes
its number and its id in one statement, so one that took a number before mark j has an
id below mark j+1's xmax) are below the current snapshot's xmin. The overlap this
leaves (about two passes of changes) is harmless: versions settle it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from dataclasses import dataclass

from prometheus_client import Counter

from server.bus import Bus
from server.core.tasks import cancel_and_wait
from server.live.windows import LiveViews
from server.storage import repository as repo
from server.storage.db import Database

log = logging.getLogger("switchboard.catchup")

RECONCILE_INTERVAL_S = 1.0
GRACE_S = 0.3  # news still on its way over a working bus is not missing
MAX_MARKS = 30  # a transaction open this many passes no longer holds the watermark back
LOOK_AT_ROWS = 500  # more missed rows than this: reload the tenant's windows unread

RECOVERED = Counter(
    "switchboard_catchup_rows_total",
    "Changed rows found in the database that the bus did not bring",
    ["trigger"],
)


@dataclass(frozen=True)
class Mark:
    seq: int  # every number handed out when the pass ran is at most this
    xmax: int  # every transaction with a smaller id had started by then


class CatchUp:
    def __init__(self, db: Database, live: LiveViews, bus: Bus):
        self.db = db
        self.live = live
        self.bus = bus
        self.low: int | None = None  # the watermark: changes above it are read back
        self.marks: deque[Mark] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        self.live.on_gap = self.gap
        # The first watermark before serving: a change this process commits is above it.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.pass_once()
        self._task = asyncio.create_task(self._run(), name="catch-up")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])

    def gap(self, reason: str) -> None:
        """The bus may have lost news: catch up now, not at the next interval."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECONCILE_INTERVAL_S):
                    await self._wake.wait()
            after_gap = self._wake.is_set()
            self._wake.clear()
            try:
                await self.pass_once(after_gap)
            except Exception as exc:  # the database is down: try again next interval
                log.warning("catch-up pass failed: %r", exc, exc_info=True)

    async def pass_once(self, after_gap: bool = False) -> int:
        """One look at the database; returns how many missed rows it found."""
        tenants = self.live.tenants()
        started = asyncio.get_running_loop().time()
        async with self.db.snapshot() as conn:
            visibility = await repo.snapshot_visibility(conn)
            mark = Mark(await repo.change_mark(conn), visibility.xmax)
            if self.low is None:  # first pass: what came before us is in our snapshots
                self.low = self.live.watermark = mark.seq
                return 0
            # Read above the watermark as it stands; only then move it, for the next
            # pass: a transaction it now covers committed before this snapshot, so this
            # read is the one that sees its rows.
            low = self.low
            changed = await repo.changed_since(conn, tenants, low) if tenants else []
        self._advance(visibility)
        self.live.watermark = self.low
        self.marks.append(mark)
        versions, holes = self.live.versions, self.live.holes
        missed = [(t, i, v) for t, i, v in changed if versions.get((t, i), 0) < v]
        cutoff = asyncio.get_running_loop().time()
        if (missed or holes) and not after_gap and self.bus.connected:
            await asyncio.sleep(GRACE_S)
            missed = [(t, i, v) for t, i, v in missed if versions.get((t, i), 0) < v]
            cutoff = started  # noticed before the pass began: they had their grace
        # Rows whose earlier change is still missing after the grace period.
        holed = {key: hole for key, hole in holes.items() if hole[1] <= cutoff}
        seen = {(t, i) for t, i, _ in missed}
        missed += [(t, i, versions.get((t, i), 2)) for t, i in holed if (t, i) not in seen]
        if not missed:
            return 0
        RECOVERED.labels("gap" if after_gap else "reconcile").inc(len(missed))
        by_tenant: dict[str, list[tuple[str, int]]] = {}
        for tenant, row_id, version in missed:
            by_tenant.setdefault(tenant, []).append((row_id, version))
        for tenant, rows in by_tenant.items():
            images = [{"id": row_id, "version": version} for row_id, version in rows]
            if len(rows) <= LOOK_AT_ROWS and all(version == 1 for _, version in rows):
                # New rows: their images say which windows they can enter.
                async with self.db.read() as conn:
                    loaded = await repo.load_conversation_rows(conn, tenant, [i for i, _ in rows])
                images = [dict(row) for row in loaded.values()]
            reloaded = await self.live.catch_up(tenant, images)
            for row_id, _ in rows:  # the reloads read them whole
                if holes.get((tenant, row_id)) == holed.get((tenant, row_id)):
                    holes.pop((tenant, row_id), None)
            log.info(
                "caught up",
                extra={"tenant": tenant, "rows": len(rows), "windows": reloaded, "gap": after_gap},
            )
        return len(missed)

    def _advance(self, visibility: repo.Visibility) -> None:
        """Move the watermark to the newest mark j such that every transaction with an
        id below mark j+1's xmax (this pass's snapshot's, for the last mark) had
        finished by this pass's snapshot."""
        if not self.marks:
            return
        following = [mark.xmax for mark in list(self.marks)[1:]] + [visibility.xmax]
        chosen = None
        for j, xmax in enumerate(following):
            if xmax <= visibility.xmin:
                chosen = j
        if chosen is None and len(self.marks) > MAX_MARKS:
            log.warning("a long transaction held the catch-up watermark back; moving on")
            chosen = 0
        if chosen is not None:
            self.low = max(self.low, self.marks[chosen].seq)
            for _ in range(chosen + 1):
                self.marks.popleft()
