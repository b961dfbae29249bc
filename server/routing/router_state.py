"""What the router keeps in memory for a tenant it routes: the conversations it may
decide on (arrivals, queues) and the load they put on agents.

Held only by the process that owns the tenant's routing (router.py) and built from
the database when it takes the tenant; then it follows the conversation rows on the
bus and the router's own applied decisions. Every change is an image of a whole row
with its version, applied only when newer than the one known, so news that arrives
twice or out of order (the router's own commit, then its bus message; several
publishers) changes nothing the second time.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from server.routing import repository as rr
from server.routing.presence import EPOCH

# Statuses the router decides on or that put load on an agent; `new` only incoming.
KEPT = ("new", "queued", "offered", "active", "wrap_up")
GONE_KEPT = 50_000  # versions of rows that left, remembered against late news


@dataclass(slots=True)
class Entry:
    id: str
    version: int
    status: str
    team: str | None
    channel: str
    contact: str
    created_at: datetime
    queued_at: datetime | None
    updated_at: datetime
    holder: tuple[str, str] | None  # (agent, call or chat) it keeps busy

    @property
    def kind(self) -> str:
        return rr.load_kind(self.channel)


def kept(row: dict) -> bool:
    status = row["status"]
    if status == "new":
        return row["direction"] == "incoming"
    return status in KEPT


class TenantState:
    def __init__(self):
        self.entries: dict[str, Entry] = {}
        self.gone: OrderedDict[str, int] = OrderedDict()  # id -> last version, bounded
        self.arrivals: list[tuple[datetime, str]] = []  # new, oldest first
        self.queues: dict[str, list[tuple[datetime, str]]] = {}  # team -> queued, oldest first
        self.lengths: dict[str, int] = {}  # team -> queued or offered
        self.loads: dict[str, dict[str, int]] = {}  # agent -> {"call": n, "chat": n}
        self.tally: dict[str, list[int]] = {s: [0, 0] for s in KEPT}  # status -> count, sum(v)
        # Rows the router has decided on whose submission is still in flight (their
        # entries are the images the decisions will make): no pass decides on them.
        self.tentative: set[str] = set()
        self.waited = False  # a pass passed over a tentative row: pass again after it

    def apply(self, row: dict, force: bool = False) -> None:
        """A row's image (bus news, a database read, or the router's decision); `force`:
        even if not newer (the database's row, replacing a decision it refused)."""
        cid, version = row["id"], row["version"]
        known = self.entries.get(cid)
        if known is not None:
            if known.version >= version and not force:
                return
            self._remove(known)
        elif self.gone.get(cid, -1) >= version and not force:
            return
        if kept(row):
            self.gone.pop(cid, None)
            self._add(
                Entry(
                    cid,
                    version,
                    row["status"],
                    row["team"],
                    row["channel"],
                    row["contact"],
                    row["created_at"],
                    row["queued_at"],
                    row["updated_at"],
                    rr.holder(row),
                )
            )
        else:
            self.gone[cid] = version
            self.gone.move_to_end(cid)
            if len(self.gone) > GONE_KEPT:
                self.gone.popitem(last=False)

    def queue(self, team: str) -> list[Entry]:
        return [self.entries[cid] for _, cid in self.queues.get(team, ())]

    def oldest_arrivals(self, limit: int) -> list[Entry]:
        return [self.entries[cid] for _, cid in self.arrivals[:limit]]

    def digest(self) -> dict[str, tuple[int, int]]:
        """Per status, how many rows and the sum of their versions (compared with the
        database's, routing_repo.router_digest)."""
        return {status: (count, total) for status, (count, total) in self.tally.items() if count}

    def _add(self, entry: Entry) -> None:
        self.entries[entry.id] = entry
        tally = self.tally[entry.status]
        tally[0] += 1
        tally[1] += entry.version
        if entry.status == "new":
            bisect.insort(self.arrivals, (entry.created_at, entry.id))
        elif entry.status == "queued":
            bisect.insort(self.queues.setdefault(entry.team, []), _queue_key(entry))
        if entry.status in ("queued", "offered"):
            self.lengths[entry.team] = self.lengths.get(entry.team, 0) + 1
        if entry.holder is not None:
            agent, kind = entry.holder
            load = self.loads.setdefault(agent, {"call": 0, "chat": 0})
            load[kind] += 1

    def _remove(self, entry: Entry) -> None:
        del self.entries[entry.id]
        tally = self.tally[entry.status]
        tally[0] -= 1
        tally[1] -= entry.version
        if entry.status == "new":
            _discard(self.arrivals, (entry.created_at, entry.id))
        elif entry.status == "queued":
            _discard(self.queues[entry.team], _queue_key(entry))
        if entry.status in ("queued", "offered"):
            self.lengths[entry.team] -= 1
        if entry.holder is not None:
            agent, kind = entry.holder
            self.loads[agent][kind] -= 1


def _queue_key(entry: Entry) -> tuple[datetime, str]:
    return (entry.queued_at or EPOCH, entry.id)


def _discard(keys: list, key) -> None:
    at = bisect.bisect_left(keys, key)
    if at < len(keys) and keys[at] == key:
        del keys[at]
