"""What the router keeps in memory for a tenant it routes: the conversations it may
decide on (arrivals, queues) and the load they put on agents.

Owns: which conversations the router keeps (the routable ones, and those holding an
agent, in the machine's groups), their order (arrivals by creation, queues by
`queued_at`), queue lengths and agents' loads. Each is kept whole, as the machine's
`Conversation` (compactly: `Entry`), so that the router decides by applying candidate
events to it.

Held only by the process that owns the tenant's routing (router.py) and built from
the database when it takes the tenant; then it follows the conversation rows on the
bus and the router's own decisions (the conversations the machine made of them, kept
tentatively until their commit). Every change is a whole conversation with its
version, applied only when newer than the one known, so news that arrives twice or
out of order (the router's own commit, then its bus message; several publishers)
changes nothing the second time.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from server.routing import repository as rr
from server.routing.presence import EPOCH
from server.routing.repository import KEPT
from server.storage.repository import CONVERSATION_FIELDS, conversation_fields
from state_machine import WAITING_STATUSES, Conversation, Status

GONE_KEPT = 50_000  # versions of rows that left, remembered against late news
_ID, _VERSION, _STATUS, _TEAM, _CHANNEL, _CREATED_AT, _QUEUED_AT = (
    CONVERSATION_FIELDS.index(name)
    for name in ("id", "version", "status", "team", "channel", "created_at", "queued_at")
)


@dataclass(slots=True)
class Entry:
    """A conversation the router keeps: its fields' values, in the order of
    Conversation's (a fifth of the memory of the Conversation itself, whose attribute
    dict gets no key sharing with that many fields: 5,000 queued take about 3 MB, not
    9), rebuilt as a Conversation when the router decides on it."""

    values: tuple
    updated_at: datetime  # when its row was written (or the router decided on it)
    holder: tuple[str, str] | None  # (agent, call or chat) it keeps busy

    @classmethod
    def of(cls, conversation: Conversation, updated_at: datetime) -> Entry:
        c = conversation
        values = tuple(getattr(c, name) for name in CONVERSATION_FIELDS)
        return cls(
            values, updated_at, rr.held_by(c.status, c.offer_agent_id, c.agent_id, c.channel)
        )

    @property
    def conversation(self) -> Conversation:
        return Conversation(**dict(zip(CONVERSATION_FIELDS, self.values, strict=True)))

    @property
    def id(self) -> str:
        return self.values[_ID]

    @property
    def version(self) -> int:
        return self.values[_VERSION]

    @property
    def status(self) -> Status:
        return self.values[_STATUS]

    @property
    def team(self) -> str | None:
        return self.values[_TEAM]

    @property
    def channel(self) -> str:
        return self.values[_CHANNEL]

    @property
    def created_at(self) -> datetime:
        return self.values[_CREATED_AT]

    @property
    def queued_at(self) -> datetime | None:
        return self.values[_QUEUED_AT]


def keeps(status: str, direction: str) -> bool:
    """Whether the router keeps a conversation in `status` going in `direction`."""
    if status == Status.NEW:
        return direction == "incoming"
    return status in KEPT


def kept(row: Mapping[str, Any]) -> bool:
    return keeps(row["status"], row["direction"])


class TenantState:
    def __init__(self):
        self.entries: dict[str, Entry] = {}
        self.gone: OrderedDict[str, int] = OrderedDict()  # id -> last version, bounded
        self.arrivals: list[tuple[datetime, str]] = []  # new, oldest first
        self.queues: dict[str, list[tuple[datetime, str]]] = {}  # team -> queued, oldest first
        self.lengths: dict[str, int] = {}  # team -> how many waiting (queued or offered)
        self.loads: dict[str, dict[str, int]] = {}  # agent -> {"call": n, "chat": n}
        # Rows the router has decided on whose submission is still in flight (their
        # entries are what the machine made of the decisions): no pass decides on them.
        self.tentative: set[str] = set()
        self.waited = False  # a pass passed over a tentative row: pass again after it

    def apply(self, row: Mapping[str, Any], force: bool = False) -> None:
        """A stored row (bus news or a database read); `force`: even if not newer (the
        database's row, replacing a decision it refused)."""
        if self._newer(row["id"], row["version"], force):
            if kept(row):
                entry = Entry(tuple(conversation_fields(row)), row["updated_at"], rr.holder(row))
                self._add(entry)
            else:
                self._leave(row["id"], row["version"])

    def decided(self, conversation: Conversation, at: datetime) -> None:
        """What the machine makes of one of the router's decisions, before its commit."""
        if self._newer(conversation.id, conversation.version, False):
            if keeps(conversation.status, conversation.direction):
                self._add(Entry.of(conversation, at))
            else:
                self._leave(conversation.id, conversation.version)

    def queue(self, team: str) -> list[Entry]:
        return [self.entries[cid] for _, cid in self.queues.get(team, ())]

    def oldest_arrivals(self, limit: int) -> list[Entry]:
        return [self.entries[cid] for _, cid in self.arrivals[:limit]]

    def _newer(self, cid: str, version: int, force: bool) -> bool:
        """Whether `version` of `cid` is news; if so its known entry is taken out."""
        known = self.entries.get(cid)
        if known is not None:
            if known.version >= version and not force:
                return False
            self._remove(known)
        elif self.gone.get(cid, -1) >= version and not force:
            return False
        return True

    def _leave(self, cid: str, version: int) -> None:
        self.gone[cid] = version
        self.gone.move_to_end(cid)
        if len(self.gone) > GONE_KEPT:
            self.gone.popitem(last=False)

    def _add(self, entry: Entry) -> None:
        self.gone.pop(entry.id, None)
        self.entries[entry.id] = entry
        status = entry.status
        if status == Status.NEW:
            bisect.insort(self.arrivals, (entry.created_at, entry.id))
        elif status == Status.QUEUED:
            bisect.insort(self.queues.setdefault(entry.team, []), _queue_key(entry))
        if status in WAITING_STATUSES:
            self.lengths[entry.team] = self.lengths.get(entry.team, 0) + 1
        if entry.holder is not None:
            agent, kind = entry.holder
            load = self.loads.setdefault(agent, {"call": 0, "chat": 0})
            load[kind] += 1

    def _remove(self, entry: Entry) -> None:
        del self.entries[entry.id]
        status = entry.status
        if status == Status.NEW:
            _discard(self.arrivals, (entry.created_at, entry.id))
        elif status == Status.QUEUED:
            _discard(self.queues[entry.team], _queue_key(entry))
        if status in WAITING_STATUSES:
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
