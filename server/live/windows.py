"""Live views: windows over views, kept exact by the bus, flushed as deltas.

A *window* holds the first rows of one view (tenant, filters and sort, agent scope)
for one window size W: `held` is a contiguous prefix of the view in its order, W
rows plus a small reserve below them, so that most rows leaving the window are
replaced without a query. Subscriptions with the same view and W share one window;
a subscription keeps only its id, its `seq` and its columns.

Every change reaches us as a bus item: a row's new image and the old values of what
changed. From the two we know whether the row was in the view and whether it is
now, so `total` moves by +1/-1 without a count query; transitions commute, so items
from several publishers may arrive in any order. Rows are placed by version: an
older image never replaces a newer one.

A window is (re)loaded from one database snapshot (rows and count together). Items
whose commit that snapshot already saw are skipped (repository.Visibility); items
arriving while it loads are kept and applied after. Reloads happen on subscribe, on
a gap in the bus, and when the clock moves a relative filter's boundary.

Each window that changed computes one delta (rows removed, rows upserted with all
their columns when new to the window or when a version was missed, else the changed
columns) against what its subscribers hold, encodes it once per column set and
format, and hands each subscriber its frame. Flushes are leading-edge: a change after
a quiet push interval goes out at once; under load there is at most one flush per
interval, so changes coalesce. A big fan-out is written in slices, letting ingest
and reads run between them.

Memory: every window's rows are accounted in bytes (`Window.bytes`: the rows it holds
times the deep size of a sample of them, `row_bytes`, plus WINDOW_OVERHEAD) against the
process's budget (`memory_budget`, SWITCHBOARD_WINDOW_MEMORY_MB); idle windows, kept
for reuse, hold at most IDLE_SHARE of it (the oldest are dropped). A subscribe that
needs a new window which would pass it first evicts idle windows, least recently used
first; if that is not enough it is refused `over_capacity`, and every existing
subscription goes on.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ctypes
import ctypes.util
import gc
import itertools
import logging
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from server.bus import Bus, BusMessage, Gap
from server.core.clock import Clock
from server.core.errors import Refused
from server.core.metrics import (
    LIVE_EVICTIONS,
    LIVE_REFUSALS,
    LIVE_SUBSCRIPTIONS,
    LIVE_WINDOW_BYTES,
    LIVE_WINDOWS,
)
from server.core.tasks import cancel_and_wait
from server.live import queries
from server.live.filters import ViewQuery
from server.live.watched import WatchedViews
from server.live.window_index import WindowIndex
from server.storage import repository as repo
from server.storage.db import Database
from server.wire.frames import Encoded, encode_body
from server.wire.rows import shown_as, wire_row

log = logging.getLogger("switchboard.live")


def _libc():
    """glibc, for malloc_trim; None elsewhere (musl, macOS: nothing to trim)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()

PUSH_INTERVAL_S = 0.02  # the shortest time between flushes (docs/websocket-server.md)
FANOUT_SLICE = 100  # subscribers written before the loop may run something else
RESERVE = 20
IDLE_WINDOW_S = 60.0  # how long a window nobody watches is kept
MAX_IDLE_WINDOWS = 1000
VERSIONS_REMEMBERED = 100_000  # per process: the newest version seen of recent rows
MEMORY_BUDGET = 256 << 20  # bytes of live windows per process (SWITCHBOARD_WINDOW_MEMORY_MB)
ROW_BYTES = 2048  # a row's guess before any was measured (measured: 1.5-2.5 KB)
ROW_SAMPLE = 16  # rows whose deep size gives a window's bytes per row
WINDOW_OVERHEAD = 4096  # a window's own structures, its index entries, a count-only one
TRIM_BYTES = 16 << 20  # windows dropped before freed memory is given back to the system
IDLE_SHARE = 0.25  # idle windows may hold this much of the budget, the oldest dropped
OVER_CAPACITY_RETRY_S = 10.0  # memory comes back as windows go idle and are evicted


def row_bytes(rows: list[dict], query: ViewQuery) -> int:
    """The deep size of a row as a window holds it, from a sample: the dict, its keys'
    values, its sort key, and its slots in `held`, `ids` and `sort_keys`."""
    sample = rows[:: max(1, len(rows) // ROW_SAMPLE)][:ROW_SAMPLE]
    if not sample:
        return ROW_BYTES
    total = 0
    for row in sample:
        total += sys.getsizeof(row) + sum(sys.getsizeof(value) for value in row.values())
        key = query.sort_key(row)
        total += sys.getsizeof(key) + sum(sys.getsizeof(part) for part in key)
        total += 3 * 8 + 100  # list slots, the `ids` entry
    return total // len(sample)


class Receiver(Protocol):
    """The connection side of a subscription (server/edge/ws/connection.py)."""

    format: str

    def send(self, *parts: bytes) -> None: ...

    def subscription_over(self, sub_id: str, kind: str, reason: str) -> None:
        """End the subscription and tell the client why (`resync`: subscribe again)."""


@dataclass(eq=False, slots=True)
class Subscription:
    id: str
    receiver: Receiver
    tenant: str
    columns: tuple[str, ...]
    window: Window | None = None
    seq: int = 0


@dataclass(eq=False)
class Window:
    tenant: str
    key: tuple
    query: ViewQuery
    size: int
    held: list[dict] = field(default_factory=list)
    ids: dict[str, dict] = field(default_factory=dict)
    sort_keys: list[tuple] = field(default_factory=list)
    total: int = 0
    complete: bool = False
    base: repo.Visibility | None = None
    loading: list | None = None  # items kept while a query runs
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    subscribers: set[Subscription] = field(default_factory=set)
    sent: dict[str, int] = field(default_factory=dict)  # id -> version the subscribers hold
    sent_total: int = 0
    changed: dict[str, set | None] = field(default_factory=dict)  # None: send whole row
    dirty: bool = False
    oldest: Any = None
    timer: asyncio.Handle | None = None
    idle_timer: asyncio.TimerHandle | None = None  # set while nobody watches it
    failed: BaseException | None = None
    bytes: int = 0  # accounted against the process's budget (LiveViews.accounted)
    row_bytes: int = ROW_BYTES

    @property
    def capacity(self) -> int:
        return self.size + RESERVE if self.size else 0

    @property
    def visible(self) -> list[dict]:
        return self.held[: self.size]

    # --- placing rows

    def _insert(self, row: dict) -> None:
        key = self.query.sort_key(row)
        index = bisect.bisect_left(self.sort_keys, key)
        self.held.insert(index, row)
        self.sort_keys.insert(index, key)
        self.ids[row["id"]] = row

    def _remove(self, row_id: str) -> None:
        row = self.ids.pop(row_id)
        index = bisect.bisect_left(self.sort_keys, self.query.sort_key(row))
        while self.held[index]["id"] != row_id:
            index += 1
        del self.held[index]
        del self.sort_keys[index]

    def _position(self, row: dict) -> int:
        return bisect.bisect_left(self.sort_keys, self.query.sort_key(row))

    def set_rows(self, rows: list[dict], total: int) -> None:
        self.held, self.ids, self.sort_keys = [], {}, []
        for row in rows:
            self._insert(row)
        self.total = total
        self.complete = len(rows) >= total

    def apply(self, new: dict, old: dict | None, now) -> None:
        """One row's change: new image, and its image before (None if it is new)."""
        was_in = old is not None and self.query.matches(old, now)
        is_in = self.query.matches(new, now)
        if is_in != was_in:
            self.total += 1 if is_in else -1
            self.dirty = True
        row_id = new["id"]
        held = self.ids.get(row_id)
        if held is not None:
            if held["version"] >= new["version"]:
                return
            consecutive = old is not None and held["version"] == old["version"]
            self._remove(row_id)
            self._note(row_id, set(new) - _same(new, old) if consecutive else None)
            if is_in and (self.complete or self._position(new) < len(self.held)):
                self._insert(new)
        elif is_in and (self.complete or self._position(new) < len(self.held)):
            self._insert(new)
            self._note(row_id, None)
            if self.query.relative and (self.oldest is None or new["created_at"] < self.oldest):
                self.oldest = new["created_at"]
        else:
            return
        while len(self.held) > self.capacity:
            dropped = self.held.pop()
            self.sort_keys.pop()
            del self.ids[dropped["id"]]
            self.complete = False
        self.complete = self.complete or len(self.held) >= self.total
        self.dirty = True

    def _note(self, row_id: str, columns: set | None) -> None:
        """Remember what changed in a row since the last delta (None: all of it)."""
        prior = self.changed.get(row_id, set())
        if columns is None or prior is None:
            self.changed[row_id] = None
        else:
            self.changed[row_id] = prior | columns

    @property
    def needs_rows(self) -> bool:
        return not self.complete and len(self.held) < self.size

    # --- deltas

    def delta(self) -> tuple[list[tuple[dict, set | None]], list[str]] | None:
        """What changed for the subscribers since the last delta, and mark it sent:
        (rows to upsert, each with the storage columns that changed or None for the
        whole row; ids to remove). None when nothing changed."""
        visible = self.visible
        now_ids = {row["id"]: row for row in visible}
        removes = [row_id for row_id in self.sent if row_id not in now_ids]
        upserts = []
        for row in visible:
            sent_version = self.sent.get(row["id"])
            if sent_version == row["version"]:
                continue
            columns = self.changed.get(row["id"]) if sent_version is not None else None
            upserts.append((row, columns))
        self.changed = {}
        self.dirty = False
        if not removes and not upserts and self.total == self.sent_total:
            return None
        self.sent = {row["id"]: row["version"] for row in visible}
        self.sent_total = self.total
        return upserts, removes


def _same(new: dict, old: dict | None) -> set:
    if old is None:
        return set()
    return {name for name, value in new.items() if old.get(name) == value}


class LiveViews:
    """All windows of this process, fed by the bus."""

    def __init__(
        self,
        db: Database,
        bus: Bus,
        clock: Clock,
        zone_of,
        push_interval: float = PUSH_INTERVAL_S,
        memory_budget: int = MEMORY_BUDGET,
    ):
        self.db = db
        self.memory_budget = memory_budget
        self.accounted = 0  # bytes of every window of this process
        self.idle_bytes = 0  # of those, windows nobody watches
        # the largest row measured here so far: a new window's guess, kept rather than
        # found again over every window at each subscribe (F2 makes 10,000 of them)
        self.largest_row = ROW_BYTES
        self._freed = 0  # bytes of windows dropped since memory was last given back
        self._trim_scheduled = False
        self.evictions = 0
        self.refusals = 0
        self.push_interval = push_interval
        self.bus = bus
        self.clock = clock
        self.zone_of = zone_of  # async tenant -> ZoneInfo
        self.windows: dict[tuple, Window] = {}
        self.index = WindowIndex()
        self._idle: dict[Window, float] = {}  # windows nobody watches -> since, oldest first
        self.versions: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._subscription = None
        self._tasks: set[asyncio.Task] = set()
        self._flush_scheduled = False
        self._last_flush = float("-inf")  # loop time the last flush started
        self._touched: set[Window] = set()  # windows changed since the last flush
        self._flush_lock = asyncio.Lock()
        self._sub_ids = itertools.count(1)
        self.on_gap = None  # called with the reason when the bus may have lost news
        # Catch-up (server/live/catchup.py): the change sequence up to which it has looked,
        # and rows whose news came with an earlier change missing -> (version whose
        # news is missing, loop time noticed). Such a row's version is the newest, so
        # only this tells catch-up that a window may have missed its earlier change.
        self.watermark = 0
        self.holes: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()
        self.watched = WatchedViews(db)  # subscriptions by a saved view's id

    async def start(self) -> None:
        self._subscription = self.bus.subscribe()
        self._spawn(self._consume())
        self._spawn(self.watched.run())

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        await cancel_and_wait(list(self._tasks))
        if self._subscription is not None:
            self._subscription.close()
        for window in self.windows.values():
            if window.timer:
                window.timer.cancel()

    # --- subscriptions

    def new_subscription(
        self, receiver: Receiver, tenant: str, columns: tuple[str, ...]
    ) -> Subscription:
        return Subscription(f"s{next(self._sub_ids)}", receiver, tenant, columns)

    async def subscribe(
        self, sub: Subscription, definition_key: str, query: ViewQuery, limit: int
    ) -> tuple[list[dict], int]:
        """Attach to the shared window; returns the rows and total the client starts
        from (its snapshot)."""
        window = await self._window(sub.tenant, definition_key, query, limit)
        async with self._flush_lock:
            await self._flush_or_give_up(window)
            sub.window = window
            window.subscribers.add(sub)
            LIVE_SUBSCRIPTIONS.inc()
            return list(window.visible), window.total

    async def fetch(self, sub: Subscription, limit: int) -> tuple[list[dict], dict | None]:
        """Grow the subscription's window by `limit` rows: the page of rows after what
        it holds, and a catch-up delta body if the bigger window is at a later moment
        than what the client held."""
        old = sub.window
        window = await self._window(sub.tenant, old.key[1], old.query, old.size + limit)
        async with self._flush_lock:
            await self._flush_or_give_up(old)
            await self._flush_or_give_up(window)
            held = dict(old.sent)
            page = window.visible[old.size :]
            for row in page:
                held[row["id"]] = row["version"]
            self._detach(sub)
            sub.window = window
            window.subscribers.add(sub)
            LIVE_SUBSCRIPTIONS.inc()
            target = {row["id"]: row for row in window.visible}
            upserts = [
                (row, None) for row_id, row in target.items() if held.get(row_id) != row["version"]
            ]
            removes = [row_id for row_id in held if row_id not in target]
            catch_up = None
            # The total too: after a gap the bigger window may be fresher than the old.
            if upserts or removes or window.total != old.sent_total:
                catch_up = {"upserts": upserts, "removes": removes, "total": window.total}
            return page, catch_up

    def unsubscribe(self, sub: Subscription) -> None:
        self.watched.forget(sub)
        self._detach(sub)

    def _detach(self, sub: Subscription) -> None:
        window = sub.window
        if window is None:
            return
        window.subscribers.discard(sub)
        sub.window = None
        LIVE_SUBSCRIPTIONS.dec()
        if not window.subscribers:
            # Kept exact a while longer: a reload, a reconnect or the next page of the
            # same view then costs no query (and no count over the whole view).
            loop = asyncio.get_running_loop()
            self._idle[window] = loop.time()
            self.idle_bytes += window.bytes
            # a handle the window keeps and cancels: the loop must not hold on to a
            # window dropped before its time (its rows would stay in memory)
            window.idle_timer = loop.call_later(IDLE_WINDOW_S, self._drop_if_idle, window)
            while len(self._idle) > MAX_IDLE_WINDOWS or (
                self.idle_bytes > self.memory_budget * IDLE_SHARE
            ):
                self._drop(next(iter(self._idle)))

    def _drop_if_idle(self, window: Window) -> None:
        since = self._idle.get(window)
        if since is not None and asyncio.get_running_loop().time() - since >= IDLE_WINDOW_S - 0.01:
            self._drop(window)

    def _unidle(self, window: Window) -> None:
        if self._idle.pop(window, None) is not None:
            self.idle_bytes -= window.bytes
        if window.idle_timer is not None:
            window.idle_timer.cancel()
            window.idle_timer = None

    def _drop(self, window: Window) -> None:
        self._unidle(window)
        if self.windows.get(window.key) is window:
            del self.windows[window.key]
            self.index.remove(window)
        if window.timer:
            window.timer.cancel()
        self._freed += window.bytes
        self._account(window, 0)
        if self._freed >= TRIM_BYTES and not self._trim_scheduled:
            self._trim_scheduled = True
            asyncio.get_running_loop().call_soon(self._give_back)

    def _give_back(self) -> None:
        """Return freed pages to the system (glibc's malloc keeps them otherwise:
        measured, RSS stayed at its peak after every window was dropped)."""
        self._trim_scheduled = False
        self._freed = 0
        gc.collect(1)  # rows in reference cycles go now, not at the next collection
        if _LIBC is not None:
            _LIBC.malloc_trim(0)

    # --- memory

    def _account(self, window: Window, size: int | None = None) -> None:
        """Set a window's accounted bytes: `size`, or what it holds now."""
        if size is None:
            if window.held:
                window.row_bytes = row_bytes(window.held, window.query)
                self.largest_row = max(self.largest_row, window.row_bytes)
            size = WINDOW_OVERHEAD + len(window.held) * window.row_bytes
        self.accounted += size - window.bytes
        if window in self._idle:
            self.idle_bytes += size - window.bytes
        window.bytes = size
        LIVE_WINDOW_BYTES.set(self.accounted)
        LIVE_WINDOWS.set(len(self.windows))

    def _make_room(self, size: int) -> None:
        """Room for a new window of `size` rows: evict idle windows, least recently
        used first, or refuse `over_capacity`."""
        needed = WINDOW_OVERHEAD + (size + RESERVE if size else 0) * self.largest_row
        while self.accounted + needed > self.memory_budget and self._idle:
            self._drop(next(iter(self._idle)))
            self.evictions += 1
            LIVE_EVICTIONS.inc()
        if self.accounted + needed > self.memory_budget:
            self.refusals += 1
            LIVE_REFUSALS.inc()
            raise Refused(
                "over_capacity",
                f"the server holds as many live rows as it may "
                f"({self.memory_budget >> 20} MB); retry later, or with a smaller limit",
                retry_after_s=OVER_CAPACITY_RETRY_S,
            )

    def total(self, tenant: str, definition_key: str, agent: str | None) -> int | None:
        """The exact total of a view if a window of it is live here, else None."""
        for (w_tenant, w_key, w_agent, _), window in self.windows.items():
            if (w_tenant, w_key, w_agent) == (tenant, definition_key, agent) and (
                window.ready.is_set() and window.loading is None and window.failed is None
            ):
                return window.total
        return None

    async def _window(
        self, tenant: str, definition_key: str, query: ViewQuery, size: int
    ) -> Window:
        key = (tenant, definition_key, query.agent, size)
        window = self.windows.get(key)
        if window is not None:
            self._unidle(window)
        else:
            self._make_room(size)
            window = Window(tenant, key, query, size)
            self.windows[key] = window
            self.index.add(window)
            self._account(window, WINDOW_OVERHEAD + window.capacity * ROW_BYTES)
            try:
                await self._reload(window)
            except BaseException as exc:
                self.windows.pop(key, None)
                self.index.remove(window)
                self._account(window, 0)
                window.failed = exc
                window.ready.set()
                raise
            window.sent = {row["id"]: row["version"] for row in window.visible}
            window.sent_total = window.total
            window.changed = {}
            window.ready.set()
        await window.ready.wait()
        if window.failed is not None:
            raise window.failed
        return window

    # --- loading

    async def _reload(self, window: Window) -> None:
        """Load the window's rows and count from one snapshot; keep bus items that
        arrive meanwhile and apply those the snapshot did not see."""
        window.loading = []
        try:
            now = self.clock.now()
            async with self.db.snapshot() as conn:
                visibility = await repo.snapshot_visibility(conn)
                rows = (
                    await queries.page(conn, window.tenant, window.query, now, window.capacity)
                    if window.capacity
                    else []
                )
                total = await queries.count(conn, window.tenant, window.query, now)
                oldest = (
                    await queries.oldest(conn, window.tenant, window.query, now)
                    if window.query.relative
                    else None
                )
        except BaseException:
            kept, window.loading = window.loading, None
            raise
        kept, window.loading = window.loading, None
        before = {row["id"]: row["version"] for row in window.held}
        window.set_rows(rows, total)
        window.base = visibility
        window.oldest = oldest
        for row in window.held:
            if before.get(row["id"]) != row["version"]:
                window.changed[row["id"]] = None
        window.dirty = True
        for new, old, token in kept:
            self._apply_item(window, new, old, token, now)
        if self.windows.get(window.key) is window:
            self._account(window)
        self._schedule_time_change(window)

    async def _refill(self, window: Window) -> None:
        """Rows below what the window holds, after rows left it (no count needed)."""
        if not window.held:
            await self._reload(window)
            return
        window.loading = []
        last = window.held[-1]
        wanted = window.capacity - len(window.held)
        try:
            now = self.clock.now()
            async with self.db.snapshot() as conn:
                rows = await queries.page(
                    conn,
                    window.tenant,
                    window.query,
                    now,
                    wanted,
                    after={f: last[f] for f in window.query.sort_fields},
                )
        except BaseException:
            window.loading = None
            raise
        kept, window.loading = window.loading, None
        for row in rows:
            if row["id"] not in window.ids:
                window._insert(row)
                window.changed[row["id"]] = None
        window.complete = len(rows) < wanted or len(window.held) >= window.total
        window.dirty = True
        if self.windows.get(window.key) is window:
            self._account(window)
        for new, old, token in kept:
            self._apply_item(window, new, old, token, now)

    def _schedule_time_change(self, window: Window) -> None:
        if window.timer:
            window.timer.cancel()
            window.timer = None
        if not window.query.relative:
            return
        moment = window.query.next_time_change(self.clock.now(), window.oldest)
        if moment is None:
            return
        # A hair after the boundary, so that the reload's `now` is past it.
        window.timer = self.clock.call_at(
            moment + timedelta(milliseconds=1),
            lambda: self._spawn(self._time_changed(window)),
        )

    async def _time_changed(self, window: Window) -> None:
        await self._reload_and_flush(window)

    # --- the bus

    async def _consume(self) -> None:
        while True:
            item = await self._subscription.get()
            try:
                if isinstance(item, Gap):
                    log.info("bus gap: catching up", extra={"reason": item.reason})
                    self.watched.wake.set()  # news of a saved view may be lost too
                    if self.on_gap is not None:
                        self.on_gap(item.reason)  # server/live/catchup.py
                    else:
                        for window in list(self.windows.values()):
                            self._spawn(self._reload_and_flush(window))
                    continue
                self._on_message(item)
            except Exception:
                log.exception("live views failed on a bus message")

    # --- catch-up (server/live/catchup.py)

    def tenants(self) -> set[str]:
        """Tenants with a window in this process."""
        return {window.tenant for window in self.windows.values()}

    async def catch_up(self, tenant: str, rows: list[dict]) -> int:
        """Rows of a tenant changed in the database without news of it on the bus:
        remember their versions, and reload the windows they may matter to, whose
        subscribers get the difference as deltas. A row first seen at version 1 has no
        old image, so only the windows its values find can change; for a later version
        the old values are unknown, so every window of the tenant is reloaded. Returns
        how many windows were reloaded."""
        affected: set[Window] = set()
        if all(row["version"] == 1 for row in rows):
            for row in rows:
                affected |= self.index.candidates(tenant, row, None)
        else:
            affected = {window for window in self.windows.values() if window.tenant == tenant}
        for window in affected:
            await window.ready.wait()
            async with self._flush_lock:
                if self.windows.get(window.key) is window:
                    await self._reload(window)  # a failure propagates: the next pass retries
                    await self._flush_window(window)
        # Known only once every window holds them: a failed reload leaves them missing.
        for row in rows:
            key = (tenant, row["id"])
            if self.versions.get(key, 0) < row["version"]:
                self.versions[key] = row["version"]
                self.versions.move_to_end(key)
        while len(self.versions) > VERSIONS_REMEMBERED:
            self.versions.popitem(last=False)
        return len(affected)

    async def _reload_and_flush(self, window: Window) -> None:
        """Reload a window from the database (after a gap, or when the clock moved a
        relative filter's boundary); its subscribers get the difference as a delta."""
        await window.ready.wait()
        async with self._flush_lock:
            if self.windows.get(window.key) is not window:
                return
            try:
                await self._reload(window)
                await self._flush_window(window)
            except Exception:
                log.exception("reload failed", extra={"tenant": window.tenant})

    def _on_message(self, message: BusMessage) -> None:
        tenant = message.tenant
        payload = message.payload
        token = payload.get("token", 0)
        if "views" in payload:  # a saved view changed or went (server/live/watched.py)
            self.watched.on_news(tenant, payload["views"])
        items = payload["rows"]
        for item in items:
            row = item["row"]
            key = (tenant, row["id"])
            self._note_hole(key, item)
            if self.versions.get(key, 0) < row["version"]:
                self.versions[key] = row["version"]
                self.versions.move_to_end(key)
                if len(self.versions) > VERSIONS_REMEMBERED:
                    self.versions.popitem(last=False)
        if not self.index.has_tenant(tenant):
            return
        now = self.clock.now()
        for item in items:
            new, before = item["row"], item["before"]
            old = None if before is None else {**new, **before}
            for window in self.index.candidates(tenant, new, old):
                if window.loading is not None:
                    window.loading.append((new, old, token))
                else:
                    self._apply_item(window, new, old, token, now)
                    self._touched.add(window)
        if self._touched:
            self._schedule_flush()

    def _note_hole(self, key: tuple[str, str], item: dict) -> None:
        """Remember a row whose change from version `start` came while the change that
        made `start` never did: known at an older version, or unknown while `start`
        was committed above the watermark (an older unknown row is just old)."""
        version, before = item["row"]["version"], item["before"]
        hole = self.holes.get(key)
        if hole is not None and hole[0] == version:
            del self.holes[key]  # the missing change came after all, out of order
        if before is None:
            return
        start = before.get("version", version - 1)
        known = self.versions.get(key, 0)
        if start > known and (known or (item.get("prev_seq") or 0) > self.watermark):
            self.holes[key] = (start, asyncio.get_running_loop().time())
            self.holes.move_to_end(key)
            if len(self.holes) > VERSIONS_REMEMBERED:
                self.holes.popitem(last=False)

    def _apply_item(self, window: Window, new: dict, old: dict | None, token: int, now) -> None:
        if window.base is not None and window.base.saw(token):
            return  # the window's snapshot already holds this change
        latest = self.versions.get((window.tenant, new["id"]), 0)
        if new["version"] < latest and new["id"] not in window.ids:
            # A newer image of this row already went by: count the transition, but
            # do not place an old image.
            window.total += int(window.query.matches(new, now)) - int(
                old is not None and window.query.matches(old, now)
            )
            window.dirty = True
            return
        window.apply(new, old, now)

    # --- flushing

    def _schedule_flush(self) -> None:
        if self._flush_scheduled:
            return
        self._flush_scheduled = True
        loop = asyncio.get_running_loop()
        delay = self._last_flush + self.push_interval - loop.time()
        if delay <= 0:  # quiet: at once, once the rest of this bus message is applied
            loop.call_soon(self._start_flush)
        else:
            loop.call_later(delay, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        self._spawn(self._flush_all())

    async def _flush_all(self) -> None:
        async with self._flush_lock:
            self._last_flush = asyncio.get_running_loop().time()
            touched, self._touched = self._touched, set()
            for window in touched:
                if self.windows.get(window.key) is not window or not window.ready.is_set():
                    continue
                if window.dirty or window.needs_rows:
                    with contextlib.suppress(Exception):  # logged and given up on
                        await self._flush_or_give_up(window)

    async def _flush_or_give_up(self, window: Window) -> None:
        """Flush a window; one that fails (a row or a delta that cannot be made) is
        logged once and given up: each of its subscriptions ends with `resync` (reason
        `server_error`) and the window is dropped, so that subscribing again reads the
        view afresh. Other windows, and the sockets themselves, go on."""
        try:
            await self._flush_window(window)
        except Exception:
            log.exception(
                "flush failed: %d subscriptions resync",
                len(window.subscribers),
                extra={"tenant": window.tenant},
            )
            for sub in list(window.subscribers):
                sub.receiver.subscription_over(sub.id, "resync", "server_error")
                self._detach(sub)  # in case the receiver kept it
            self._drop(window)
            raise

    async def _flush_window(self, window: Window) -> None:
        if window.needs_rows:
            await self._refill(window)
        if not window.dirty:
            return
        delta = window.delta()
        if delta is None or not window.subscribers:
            return
        upserts, removes = delta
        tz = await self.zone_of(window.tenant)
        frames = DeltaFrames(upserts, removes, window.total, window.query, tz)
        subscribers = list(window.subscribers)
        for start in range(0, len(subscribers), FANOUT_SLICE):
            if start:
                await asyncio.sleep(0)
            for sub in subscribers[start : start + FANOUT_SLICE]:
                if sub.window is window:  # not gone meanwhile
                    frames.send(sub)

    def send_delta(self, subscribers, upserts, removes, total, query: ViewQuery, tz) -> None:
        frames = DeltaFrames(upserts, removes, total, query, tz)
        for sub in list(subscribers):
            frames.send(sub)


class DeltaFrames:
    """One delta, encoded once per column set and format, sent to many subscribers."""

    __slots__ = ("bodies", "query", "removes", "total", "upserts", "wire")

    def __init__(self, upserts, removes, total, query: ViewQuery, tz):
        self.upserts, self.removes, self.total, self.query = upserts, removes, total, query
        self.wire = {id(row): wire_row(row, tz) for row, _ in upserts}
        self.bodies: dict[tuple, Encoded] = {}

    def send(self, sub: Subscription) -> None:
        key = (sub.columns, sub.receiver.format)
        body = self.bodies.get(key)
        if body is None:
            rows = [
                _project(self.wire[id(row)], changed, sub.columns, self.query)
                for row, changed in self.upserts
            ]
            body = self.bodies[key] = encode_body(
                sub.receiver.format, {"upsert": rows, "remove": self.removes, "total": self.total}
            )
        sub.seq += 1
        sub.receiver.send(*body.frame("delta", sub.id, sub.seq))


def _project(wire: dict, changed: set | None, columns: tuple[str, ...], query: ViewQuery) -> dict:
    if changed is None:
        names = ("id", "version", *columns, *query.sort_fields)
    else:
        shown = set()
        for name in changed:
            shown.update(shown_as(name))
        names = ("id", "version", *query.sort_fields, *(c for c in columns if c in shown))
    return {name: wire[name] for name in dict.fromkeys(names)}
