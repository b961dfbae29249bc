"""What a client of /ws holds, rebuilt from the frames it received, and the random
traffic and views the consistency tests drive the server with."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from functools import cmp_to_key
from typing import Any

from sqlalchemy import select

from server.live import queries
from server.live.definitions import parse_definition
from server.live.filters import compile_view, parse_sort
from server.storage import models as m
from server.storage.db import Database
from server.wire.rows import project


class ClientModel:
    """Applies snapshot, pages and deltas as a client would, checking the protocol's
    guarantees on the way: seq contiguous, versions never going down."""

    def __init__(self, snapshot: dict, sort: list | None):
        self.sub = snapshot["sub"]
        self.columns = snapshot["columns"]
        self.sort = parse_sort(sort)
        self.rows: dict[str, dict] = {row["id"]: dict(row) for row in snapshot["rows"]}
        self.total = snapshot["total"]
        self.seq = snapshot["seq"]
        self.errors: list[str] = []

    def page(self, frame: dict) -> None:
        if frame["seq"] != self.seq:
            self.errors.append(f"page seq {frame['seq']} != {self.seq}")
        for row in frame["rows"]:
            self._upsert(row)

    def delta(self, frame: dict) -> None:
        if frame["seq"] != self.seq + 1:
            self.errors.append(f"delta seq {frame['seq']} after {self.seq}")
        self.seq = frame["seq"]
        for row_id in frame["remove"]:
            self.rows.pop(row_id, None)
        for row in frame["upsert"]:
            self._upsert(row)
        self.total = frame["total"]

    def _upsert(self, row: dict) -> None:
        held = self.rows.get(row["id"])
        if held is not None and row["version"] < held["version"]:
            self.errors.append(
                f"{row['id']} went from version {held['version']} to {row['version']}"
            )
            return
        if held is None:
            missing = set(self.columns) - set(row)
            if missing:
                self.errors.append(f"{row['id']} entered without {sorted(missing)}")
            self.rows[row["id"]] = dict(row)
        else:
            held.update(row)

    def ordered(self) -> list[dict]:
        def compare(a: dict, b: dict) -> int:
            for key in self.sort:
                left, right = a[key.field], b[key.field]
                if left != right:
                    result = -1 if left < right else 1
                    return -result if key.descending else result
            return 0

        return sorted(self.rows.values(), key=cmp_to_key(compare))

    def feed(self, frames: list[dict]) -> None:
        for frame in frames:
            if frame.get("sub") != self.sub:
                continue
            if frame["type"] == "delta":
                self.delta(frame)
            elif frame["type"] == "page":
                self.page(frame)


async def fresh_rows(
    db: Database, tenant: str, view: dict, window: int, tz, now, agent: str | None = None
) -> tuple[list[dict], int]:
    """What a fresh snapshot with limit `window` gives now, projected like the server."""
    query = compile_view(view.get("filters"), view.get("sort"), tz, agent)
    definition = parse_definition(view, tz)
    async with db.snapshot() as conn:
        rows = await queries.page(conn, tenant, query, now, window) if window else []
        total = await queries.count(conn, tenant, query, now)
    return [project(row, definition.columns, query.sort_fields, tz) for row in rows], total


async def stored_versions(db: Database, tenant: str) -> dict[str, int]:
    async with db.read() as conn:
        result = await conn.execute(
            select(m.conversations.c.id, m.conversations.c.version).where(
                m.conversations.c.tenant_id == tenant
            )
        )
        return dict(result.tuples())


# --- random views ------------------------------------------------------------------------

TEAMS = ("sales", "support", "billing")
AGENTS = ("a1", "a2", "a3")
NAMES = ("Ana García", "ben okafor", "Chloé Martin", "DMITRI", "Émile Zola", "Zoë")
COLUMN_CHOICES = (
    "customer_name",
    "created_time",
    "agent_id",
    "team",
    "status",
    "state",
    "channel",
    "csat",
    "disposition",
    "ticket_id",
    "wait_s",
    "has_recording",
)


def random_view(rng: random.Random) -> dict:
    candidates = [
        {
            "field": "channel",
            "op": "in",
            "value": rng.sample(["call", "chat", "sms", "whatsapp"], rng.randint(1, 3)),
        },
        {
            "field": "status",
            "op": "in",
            "value": rng.sample(
                ["new", "queued", "offered", "active", "wrap_up", "closed", "dialing"],
                rng.randint(1, 4),
            ),
        },
        {"field": "status", "op": "ne", "value": "closed"},
        {"field": "team", "op": "eq", "value": rng.choice(TEAMS)},
        {"field": "agent_id", "op": "in", "value": rng.sample(AGENTS, 2)},
        {"field": "customer_name", "op": "contains", "value": rng.choice(["a", "É", "zo"])},
        {"field": "state", "op": "is_empty"},
        {"field": "csat", "op": "gte", "value": 3},
        {"field": "created_at", "op": "within", "value": "last_24h"},
        {"field": "channels", "op": "contains", "value": "sms"},
    ]
    filters = rng.sample(candidates, rng.randint(0, 2))
    sort = rng.choice(
        [
            [],
            [{"field": "created_at", "dir": "asc"}],
            [{"field": "status", "dir": "asc"}, {"field": "created_at", "dir": "desc"}],
            [{"field": "id", "dir": "asc"}],
        ]
    )
    columns = ["id", *rng.sample(COLUMN_CHOICES, rng.randint(1, 5))]
    return {"filters": filters, "sort": sort, "columns": columns}


# --- random traffic ------------------------------------------------------------------------


class Traffic:
    """Random but mostly valid event streams over a set of conversations."""

    def __init__(self, rng: random.Random, start: datetime, prefix: str = "c"):
        self.rng = rng
        self.clock = start
        self.prefix = prefix
        self.status: dict[str, str] = {}
        self.offers: dict[str, tuple[str, str]] = {}
        self.count = 0

    def _tick(self) -> str:
        self.clock += timedelta(milliseconds=self.rng.randint(1, 900))
        return self.clock.isoformat().replace("+00:00", "Z")

    def _event(self, type_: str, cid: str, **data) -> dict:
        self.count += 1
        return {
            "event_id": f"{self.prefix}-e{self.count}",
            "type": type_,
            "conversation_id": cid,
            "occurred_at": self._tick(),
            "data": data,
        }

    def next(self) -> dict:
        rng = self.rng
        open_ids = [cid for cid, status in self.status.items() if status != "closed"]
        if not open_ids or rng.random() < 0.15:
            cid = f"{self.prefix}{len(self.status)}"
            if rng.random() < 0.25:
                self.status[cid] = "dialing"
                return self._event(
                    "conversation.initiated",
                    cid,
                    channel=rng.choice(["call", "sms", "whatsapp"]),
                    contact="+3491100" + str(rng.randint(10, 99)),
                    agent_id=rng.choice(AGENTS),
                    customer={"name": rng.choice(NAMES)},
                )
            self.status[cid] = "new"
            return self._event(
                "conversation.created",
                cid,
                channel=rng.choice(["call", "chat", "sms", "whatsapp"]),
                contact=f"+34911{rng.randint(100, 999)}",
                customer={"name": rng.choice(NAMES)},
            )
        cid = rng.choice(open_ids)
        return self._step(cid, self.status[cid])

    def _step(self, cid: str, status: str) -> dict:
        rng = self.rng
        roll = rng.random()
        if roll < 0.1:
            return self._event(
                "media.message",
                cid,
                message_id=f"m{self.count}",
                sender=rng.choice(["customer", "agent"]),
                text="hello",
            )
        if roll < 0.15:
            return self._event("ticket.linked", cid, ticket_id=f"T{rng.randint(1, 9)}")
        if roll < 0.18:
            return self._event("media.channel_added", cid, channel=rng.choice(["sms", "chat"]))
        if status == "new":
            if rng.random() < 0.1:
                self.status[cid] = "closed"
                return self._event("media.customer_dropped", cid)
            self.status[cid] = "queued"
            return self._event("routing.enqueued", cid, team=rng.choice(TEAMS))
        if status == "queued":
            if rng.random() < 0.15:
                self.status[cid] = "closed"
                return self._event("routing.queue_timeout", cid)
            agent = rng.choice(AGENTS)
            offer = f"o{self.count}"
            self.offers[cid] = (agent, offer)
            self.status[cid] = "offered"
            return self._event(
                "routing.offered",
                cid,
                agent_id=agent,
                offer_id=offer,
                expires_at="2030-01-01T00:00:00Z",
            )
        if status == "offered":
            agent, offer = self.offers[cid]
            if rng.random() < 0.3:
                self.status[cid] = "queued"
                return self._event(
                    "routing.offer_declined", cid, agent_id=agent, offer_id=offer, reason="rejected"
                )
            self.status[cid] = "active"
            return self._event("agent.accepted", cid, agent_id=agent, offer_id=offer)
        if status == "dialing":
            self.status[cid] = rng.choice(["ringing", "active"])
            return self._event(
                "media.ringing" if self.status[cid] == "ringing" else "media.answered", cid
            )
        if status == "ringing":
            if rng.random() < 0.4:
                self.status[cid] = "wrap_up"
                return self._event("media.no_answer", cid, reason="no_answer")
            self.status[cid] = "active"
            return self._event("media.answered", cid)
        if status == "active":
            if rng.random() < 0.2:
                self.status[cid] = "queued"
                return self._event("routing.transferred", cid, team=rng.choice(TEAMS))
            self.status[cid] = "wrap_up"
            return self._event("media.hangup", cid, source=rng.choice(["customer", "agent"]))
        if status == "wrap_up":
            self.status[cid] = "closed"
            if rng.random() < 0.3:
                return self._event("wrapup.timeout", cid)
            return self._event(
                "wrapup.submitted", cid, disposition=rng.choice(["sale", "info"]), note="ok"
            )
        raise AssertionError(status)

    def csat(self) -> dict | None:
        closed = [cid for cid, status in self.status.items() if status == "closed"]
        if not closed:
            return None
        return self._event("csat.received", self.rng.choice(closed), score=self.rng.randint(1, 5))


def comparable(rows: list[dict]) -> list[dict[str, Any]]:
    return [dict(sorted(row.items())) for row in rows]
