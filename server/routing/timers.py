"""Durable timers: offer expiry, queue timeout, wrap-up timeout, the reply timeout of
outgoing messages and the presence grace, kept as rows of `timers` with a due time.

Owns: when each timer is armed and disarmed, and firing them. Timers are armed and
disarmed in the same transaction as the change that calls for them (`TimerArming`, a
recorder the composition root gives every ingest), so a commit and its timers never
part: an offer's expiry follows the machine's effects (armed on `OfferStarted`,
disarmed on `OfferEnded`, with the offer recorded for late answers), the queue,
wrap-up and reply timeouts follow the status before and after each applied event,
read through the machine's groups. Any process fires them: it claims due rows for a
lease (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so two processes never claim one row;
SQLite: inside its single write transaction), hands their events to ingest, and
deletes them. Each timer's event has a fixed `event_id`, so a timer fired again (a
process died after ingest committed but before the delete, and the lease ran out) is a
`duplicate`, never a second change. A timer that came due while every process was down
fires at the next start.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, select, update

from server.core.clock import Clock
from server.core.tasks import cancel_and_wait
from server.ingest.pipeline import Change, Ingest
from server.routing import repository as rr
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database, DatabaseUnavailable
from server.wire.rows import instant
from state_machine import WAITING_STATUSES, OfferEnded, OfferStarted, Status

log = logging.getLogger("switchboard.timers")

POLL_S = 0.25  # timers armed by other processes are seen within this
CLAIM_S = 15.0  # a claimed timer whose process died fires again after this
BATCH = 200
TEXT_CHANNELS = frozenset({"chat", "sms", "whatsapp", "omnichannel"})


def timer_event(kind: str, key: str, conversation_id: str, type_: str, due, data: dict) -> dict:
    return {
        "event_id": f"timer:{_digest(key, instant(due))}",
        "type": type_,
        "conversation_id": conversation_id,
        "occurred_at": instant(due),
        "data": data,
    }


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:24]


def offer_expiry_event(conversation_id: str, offer_id: str, agent_id: str, due) -> dict:
    """The expiry of an offer: the timer's and a late accept's (the same event_id)."""
    return {
        "event_id": f"expire:{offer_id}",
        "type": "routing.offer_declined",
        "conversation_id": conversation_id,
        "occurred_at": instant(due),
        "data": {"agent_id": agent_id, "offer_id": offer_id, "reason": "expired"},
    }


class TimerArming:
    """Records alongside ingest's rows (pipeline.Alongside) the offers made and the
    timers the applied events arm and disarm. One per process, given to each of its
    ingests; `forget` drops a tenant's cached settings when the bus says they changed."""

    def __init__(self, db: Database):
        self.db = db
        # tenant -> its timer settings; forgotten when the bus says settings changed
        self.settings: dict[str, dict] = {}

    def forget(self, tenant: str) -> None:
        self.settings.pop(tenant, None)

    async def record(
        self, tenant: str, now: datetime, changes: list[Change], rows: repo.IngestRows, conn
    ) -> None:
        settings = self.settings.get(tenant)
        if settings is None:  # outside the batch's transaction: not behind its locks
            async with self.db.read() as read:
                settings = self.settings[tenant] = await rr.timer_settings(read, tenant)
        arm_timers(tenant, changes, now, settings, rows)


def arm_timers(
    tenant: str, changes: list[Change], now: datetime, settings, rows: repo.IngestRows
) -> None:
    """Put into `rows` the timers and offers that the applied events (`changes`, in
    order) call for; written with the batch's rows in one statement (repository.py).
    A key armed and disarmed within the batch ends as its last change leaves it."""
    timers: dict[str, dict | None] = {}  # key -> the armed row, or None: disarmed
    offers: list[dict] = []
    builtin = settings["routing"] == "builtin"  # an external router times its own
    for change in changes:
        before, after = change.before, change.after
        cid = after.id
        # An offer: its expiry, and a record that outlives it (late accepts).
        for effect in change.effects:
            if isinstance(effect, OfferEnded):
                timers[f"offer:{effect.offer_id}"] = None
            elif isinstance(effect, OfferStarted):
                offers.append(
                    {
                        "tenant_id": tenant,
                        "offer_id": effect.offer_id,
                        "conversation_id": cid,
                        "agent_id": effect.agent_id,
                        "expires_at": effect.expires_at,
                        "created_at": now,
                    }
                )
                if builtin:
                    key = f"offer:{effect.offer_id}"
                    event = offer_expiry_event(
                        cid, effect.offer_id, effect.agent_id, effect.expires_at
                    )
                    timers[key] = _row(tenant, key, "offer_expiry", cid, effect.expires_at, event)
        was = None if before is None else before.status
        # The queue: from each (re)queueing until it leaves the queue.
        queue_key = f"queue:{cid}"
        if after.status in WAITING_STATUSES and after.queued_at and builtin:
            if before is None or before.queued_at != after.queued_at:
                team = settings["teams"].get(after.team, rr.TEAM_DEFAULTS)
                due = after.queued_at + timedelta(seconds=team["queue_timeout_s"])
                event = timer_event("queue", queue_key, cid, "routing.queue_timeout", due, {})
                timers[queue_key] = _row(tenant, queue_key, "queue_expiry", cid, due, event)
        elif was in WAITING_STATUSES:
            timers[queue_key] = None
        # Wrap-up and reply timeouts count from when the change was stored (a late
        # or replayed event does not start a timer that is already over).
        wrap_key = f"wrapup:{cid}"
        if after.status is Status.WRAP_UP and was is not Status.WRAP_UP:
            team = settings["teams"].get(after.team) if after.team else None
            seconds = (team or {}).get("wrap_up_timeout_s") or settings["wrap_up_timeout_s"]
            due = now + timedelta(seconds=seconds)
            event = timer_event("wrapup", wrap_key, cid, "wrapup.timeout", due, {})
            timers[wrap_key] = _row(tenant, wrap_key, "wrap_up_timeout", cid, due, event)
        elif was is Status.WRAP_UP and after.status is not Status.WRAP_UP:
            timers[wrap_key] = None
        reply_key = f"reply:{cid}"
        if (
            before is None
            and after.status is Status.DIALING
            and after.direction == "outgoing"
            and after.channel in TEXT_CHANNELS
        ):
            due = now + timedelta(seconds=settings["reply_timeout_s"])
            event = timer_event(
                "reply", reply_key, cid, "media.no_answer", due, {"reason": "no_reply"}
            )
            timers[reply_key] = _row(tenant, reply_key, "reply_timeout", cid, due, event)
        elif was is Status.DIALING and after.status is not Status.DIALING:
            timers[reply_key] = None
    for key, row in timers.items():
        if row is None:
            rows.disarmed_timers.append({"tenant_id": tenant, "key": key})
        else:
            rows.timers.append(row)
    rows.offers.extend(offers)


def _row(tenant: str, key: str, kind: str, cid: str | None, due, event: dict) -> dict:
    """A timer row. `kind` names the timer for people reading the table (offer_expiry,
    queue_expiry, wrap_up_timeout, reply_timeout; presence.py's presence_grace); only
    presence_grace is told apart when it fires."""
    return {
        "tenant_id": tenant,
        "key": key,
        "kind": kind,
        "conversation_id": cid,
        "due_at": due,
        "event": event,
        "claimed_until": None,
    }


class TimerRunner:
    """Fires due timers in this process, alongside any other process doing the same."""

    def __init__(self, db: Database, ingest: Ingest, clock: Clock, on_presence_timeout=None):
        self.db = db
        self.ingest = ingest
        self.clock = clock
        self.on_presence_timeout = on_presence_timeout  # async (tenant, agent_id)
        self._task: asyncio.Task | None = None
        self.fired = 0  # timers this process fired (tests, metrics)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="timers")

    async def stop(self) -> None:
        await cancel_and_wait([self._task])

    async def _run(self) -> None:
        while True:
            try:
                fired = await self.fire_due()
            except asyncio.CancelledError:
                raise
            except DatabaseUnavailable:
                fired = 0
            except Exception:
                log.exception("firing timers failed")
                fired = 0
            if fired < BATCH:  # a full batch: more may be due at once
                await asyncio.sleep(POLL_S)

    async def fire_due(self) -> int:
        """Claim the due timers no other process holds, fire them, delete them."""
        now = self.clock.now()
        claimed = await self._claim(now)
        if not claimed:
            return 0
        by_tenant: dict[str, list[dict]] = {}
        for row in claimed:
            by_tenant.setdefault(row["tenant_id"], []).append(row)
        for tenant, rows in by_tenant.items():
            events = [row["event"] for row in rows if row["kind"] != "presence_grace"]
            if events:
                await self.ingest.submit(tenant, events)
            for row in rows:
                if row["kind"] == "presence_grace" and self.on_presence_timeout:
                    await self.on_presence_timeout(tenant, row["event"]["agent_id"])
        async with self.db.write() as conn:
            for row in claimed:  # unless re-armed meanwhile (a new due time)
                await conn.execute(
                    delete(m.timers).where(
                        m.timers.c.tenant_id == row["tenant_id"],
                        m.timers.c.key == row["key"],
                        m.timers.c.due_at == row["due_at"],
                    )
                )
        self.fired += len(claimed)
        return len(claimed)

    async def _claim(self, now: datetime) -> list[dict[str, Any]]:
        t = m.timers
        claimable = (t.c.due_at <= now) & (t.c.claimed_until.is_(None) | (t.c.claimed_until < now))
        async with self.db.read() as conn:  # most polls find nothing: no write for them
            if (await conn.execute(select(t.c.key).where(claimable).limit(1))).first() is None:
                return []
        due = select(t).where(claimable).order_by(t.c.due_at).limit(BATCH)
        if not self.db.is_sqlite:
            due = due.with_for_update(skip_locked=True)
        async with self.db.write() as conn:
            rows = [dict(row) for row in (await conn.execute(due)).mappings()]
            until = now + timedelta(seconds=CLAIM_S)
            for row in rows:
                await conn.execute(
                    update(t)
                    .where(and_(t.c.tenant_id == row["tenant_id"], t.c.key == row["key"]))
                    .values(claimed_until=until)
                )
        return rows
