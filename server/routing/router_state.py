"""What the router keeps in memory for a tenant it routes: the conversations it may
decide on (arrivals, queues) and the load they put on agents.

Owns: which conversations the router keeps (the routable ones, and those holding an
agent, in the machine's groups), their order (arrivals by creation, queues by
`queued_at`), queue lengths and agents' loads. Each is kept as the machine's
`Conversation`, so that the router decides by applying candidate events to it.

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
from server.storage.repository import conversation_from_row
from state_machine import WAITING_STATUSES, Conversation, Status

GONE_KEPT = 50_000  # versions of rows that left, remembered against late news


@dataclass(slots=True)
class Entry:
    conversation: Conversation
    updated_at: datetime  # when its row was written (or the router decided on it)
    holder: tuple[str, str] | None  # (agent, call or chat) it keeps busy

    @property
    def id(self) -> str:
        return self.conversation.id

    @property
    def version(self) -> int:
        return self.conversation.version


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
                self._add(Entry(conversation_from_row(row), row["updated_at"], rr.holder(row)))
            else:
                self._leave(row["id"], row["version"])

    def decided(self, conversation: Conversation, at: datetime) -> None:
        """What the machine makes of one of the router's decisions, before its commit."""
        cid = conversation.id
        if self._newer(cid, conversation.version, False):
            c = conversation
            if keeps(c.status, c.direction):
                holder = rr.held_by(c.status, c.offer_agent_id, c.agent_id, c.channel)
                self._add(Entry(c, at, holder))
            else:
                self._leave(cid, conversation.version)

    def queue(self, team: str) -> list[Conversation]:
        return [self.entries[cid].conversation for _, cid in self.queues.get(team, ())]

    def oldest_arrivals(self, limit: int) -> list[Conversation]:
        return [self.entries[cid].conversation for _, cid in self.arrivals[:limit]]

    def _newer(self, cid: str, version: int, force: bool) -> bool:
        """Whether `version` of `cid` is news; if so its known entry is taken out."""
        known = self.entries.get(cid)
        if known is not None:
            if known.conversation.version >= version and not force:
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
        conversation = entry.conversation
        self.gone.pop(conversation.id, None)
        self.entries[conversation.id] = entry
        status = conversation.status
        if status == Status.NEW:
            bisect.insort(self.arrivals, (conversation.created_at, conversation.id))
        elif status == Status.QUEUED:
            bisect.insort(self.queues.setdefault(conversation.team, []), _queue_key(conversation))
        if status in WAITING_STATUSES:
            self.lengths[conversation.team] = self.lengths.get(conversation.team, 0) + 1
        if entry.holder is not None:
            agent, kind = entry.holder
            load = self.loads.setdefault(agent, {"call": 0, "chat": 0})
            load[kind] += 1

    def _remove(self, entry: Entry) -> None:
        conversation = entry.conversation
        del self.entries[conversation.id]
        status = conversation.status
        if status == Status.NEW:
            _discard(self.arrivals, (conversation.created_at, conversation.id))
        elif status == Status.QUEUED:
            _discard(self.queues[conversation.team], _queue_key(conversation))
        if status in WAITING_STATUSES:
            self.lengths[conversation.team] -= 1
        if entry.holder is not None:
            agent, kind = entry.holder
            self.loads[agent][kind] -= 1


def _queue_key(conversation: Conversation) -> tuple[datetime, str]:
    return (conversation.queued_at or EPOCH, conversation.id)


def _discard(keys: list, key) -> None:
    at = bisect.bisect_left(keys, key)
    if at < len(keys) and keys[at] == key:
        del keys[at]
