"""Popups: the agents connected to this process, and the `popup` / `popup_closed`
frames their offers call for.

Owns: the agents' connections here and the frames their offers call for; when an
offer starts and ends, and how, is the machine's (its `OfferStarted` and `OfferEnded`
effects, which ingest puts on the bus message beside the row).

Every process hears every committed change on the bus; the one holding an agent's
connections sends that agent's frames. An offer started means `popup` (customer, the
contact's recent conversations and tickets, `expires_at`, from the row as committed);
an offer ended means `popup_closed` with the machine's reason (`accepted`,
`rejected`, `expired`, or `cancelled` when a drop, a timeout or a transfer ended it).
An offer started and ended within one commit shows nothing. Each agent's frames are
built in the order the changes came (one lane per agent), so an offer's popup always
goes before its popup_closed; agents' lanes do not wait for each other. A
popup_closed needs no read; the popups' reads run without a transaction (one round
trip each, no BEGIN and ROLLBACK).

The router of this process announces the offers it is about to submit (`prefetch`):
for an agent connected here, the popup's history and tickets are read while the offer
commits, so the popup goes out without a read once the offer's row arrives. Any
other change of the contact's conversations meanwhile drops what was read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any, Protocol

from server.core.tasks import cancel_and_wait
from server.routing import repository as rr
from server.storage.db import Database
from server.wire.rows import instant, wire_row

log = logging.getLogger("switchboard.popups")

MAX_PENDING = 10_000  # popup work waiting; past it, the oldest news is dropped (logged)
CONCURRENCY = 8  # frames read for at once (each takes a connection)
MAX_PREFETCHED = 2_000  # popups' contents read ahead of their offer's commit
PREFETCH_KEEP_S = 30.0  # one never claimed (its offer refused) is forgotten after this


class AgentConnection(Protocol):
    principal: Any

    def reply(self, frame: dict[str, Any]) -> None: ...


class Popups:
    def __init__(self, db: Database, zone_of):
        self.db = db
        self.zone_of = zone_of  # async tenant -> ZoneInfo
        self.sockets: dict[tuple[str, str], set[AgentConnection]] = {}
        self._work: asyncio.Queue = asyncio.Queue(MAX_PENDING)
        self._task: asyncio.Task | None = None
        # Jobs taken from _work, by agent, each agent's run by one lane task; at most
        # MAX_PENDING of them (_room), so a slow database backs up into _work, whose
        # overflow drops the oldest.
        self._lanes: dict[tuple[str, str], deque] = {}
        self._lane_tasks: set[asyncio.Task] = set()
        self._room = asyncio.Semaphore(MAX_PENDING)
        self._reads = asyncio.Semaphore(CONCURRENCY)
        # (tenant, conversation) -> (contact, when, the read of history and tickets)
        self._prefetched: dict[tuple[str, str], tuple[str, float, asyncio.Task]] = {}
        self._by_contact: dict[tuple[str, str], set[str]] = {}  # (tenant, contact) -> ids

    def start(self) -> None:
        self._task = asyncio.create_task(self._worker(), name="popups")

    async def stop(self) -> None:
        tasks = [*self._lane_tasks, *([self._task] if self._task else [])]
        tasks += [task for _, _, task in self._prefetched.values()]
        await cancel_and_wait(tasks)

    def add(self, connection: AgentConnection) -> bool:
        """Register an agent's connection; True when it is the agent's first here."""
        key = (connection.principal.tenant, connection.principal.user)
        sockets = self.sockets.setdefault(key, set())
        sockets.add(connection)
        self._put(("pending", key, connection))
        return len(sockets) == 1

    def remove(self, connection: AgentConnection) -> bool:
        """Forget a connection; True when it was the agent's last here."""
        key = (connection.principal.tenant, connection.principal.user)
        sockets = self.sockets.get(key)
        if not sockets or connection not in sockets:
            return False
        sockets.discard(connection)
        if not sockets:
            del self.sockets[key]
            return True
        return False

    def connected(self, tenant: str, agent_id: str) -> bool:
        return (tenant, agent_id) in self.sockets

    def agents(self):
        """(tenant, agent) of every agent with a connection here (a live view)."""
        return self.sockets.keys()

    def prefetch(self, tenant: str, offers: list[tuple[str, str, str]]) -> None:
        """(conversation, contact, agent) of offers about to be submitted: read their
        popups' history and tickets now for the agents connected here."""
        now = time.monotonic()
        if len(self._prefetched) > MAX_PREFETCHED / 2:
            for key, (_, at, _task) in list(self._prefetched.items()):
                if now - at > PREFETCH_KEEP_S:
                    self._forget_prefetched(key)[2].cancel()
        for conversation_id, contact, agent in offers:
            if (tenant, agent) not in self.sockets or len(self._prefetched) >= MAX_PREFETCHED:
                continue
            task = asyncio.create_task(self._read_context(tenant, contact, conversation_id))
            task.add_done_callback(_retrieve)
            again = self._forget_prefetched((tenant, conversation_id))  # an offer made again
            if again is not None:
                again[2].cancel()
            self._prefetched[(tenant, conversation_id)] = (contact, now, task)
            self._by_contact.setdefault((tenant, contact), set()).add(conversation_id)

    def _forget_prefetched(self, key: tuple[str, str]):
        """Take a read ahead out (returned, for its popup), or drop it."""
        entry = self._prefetched.pop(key, None)
        if entry is not None:
            ids = self._by_contact.get((key[0], entry[0]))
            if ids is not None:
                ids.discard(key[1])
                if not ids:
                    del self._by_contact[(key[0], entry[0])]
        return entry

    async def _read_context(self, tenant: str, contact: str, conversation_id: str):
        async with self._reads, self._connection() as conn:
            return await _context(conn, tenant, contact, conversation_id)

    @contextlib.asynccontextmanager
    async def _connection(self):
        async with self.db.engine.connect() as conn:
            if not self.db.is_sqlite:  # (SQLite's connections keep their own recipe)
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    def on_rows(self, tenant: str, items: list[dict]) -> None:
        if self._prefetched:
            self._drop_prefetched(tenant, items)
        for item in items:
            offers = item.get("offers")
            if not offers:
                continue
            jobs: list[tuple | None] = []
            shown: dict[str, int] = {}  # offer started in this commit -> its popup's job
            for offer in offers:
                offer_id, key = offer["offer_id"], (tenant, offer["agent_id"])
                if "reason" in offer:  # ended
                    at = shown.pop(offer_id, None)
                    if at is not None:  # started in this very commit: show neither
                        jobs[at] = None
                    elif key in self.sockets:
                        jobs.append(("ended", key, offer_id, offer["reason"]))
                elif key in self.sockets:  # started: the row has it as its current offer
                    shown[offer_id] = len(jobs)
                    jobs.append(("popup", key, item["row"]))
            for job in jobs:
                if job is not None:
                    self._put(job)

    def _drop_prefetched(self, tenant: str, items: list[dict]) -> None:
        """A change of a contact's conversations other than the prefetched offer itself
        may change that popup's history or tickets: forget what was read."""
        for item in items:
            row, before = item["row"], item["before"]
            ids = self._by_contact.get((tenant, row["contact"]))
            if not ids:
                continue
            for conversation_id in list(ids):
                its_offer = (  # the offer itself started, with no ticket linked
                    row["id"] == conversation_id
                    and before is not None
                    and "ticket_id" not in before
                    and any("expires_at" in offer for offer in item.get("offers", ()))
                )
                if not its_offer:
                    self._forget_prefetched((tenant, conversation_id))[2].cancel()

    def _put(self, job: tuple) -> None:
        try:
            self._work.put_nowait(job)
        except asyncio.QueueFull:
            log.warning("popup work overflowed; dropping the oldest")
            with contextlib.suppress(asyncio.QueueEmpty):
                self._work.get_nowait()
            self._work.put_nowait(job)

    async def _worker(self) -> None:
        """Hands each job to its agent's lane, starting the lane if it is idle."""
        while True:
            job = await self._work.get()
            await self._room.acquire()
            key = job[1]
            lane = self._lanes.get(key)
            if lane is not None:
                lane.append(job)
                continue
            self._lanes[key] = deque([job])
            task = asyncio.create_task(self._lane(key))
            self._lane_tasks.add(task)
            task.add_done_callback(self._lane_tasks.discard)

    async def _lane(self, key: tuple[str, str]) -> None:
        lane = self._lanes[key]
        try:
            while lane:
                job = lane[0]
                try:
                    await self._run(job)
                except Exception:
                    log.exception("popup failed")
                finally:
                    lane.popleft()
                    self._room.release()
        finally:
            del self._lanes[key]

    async def _run(self, job: tuple) -> None:
        kind, (tenant, agent) = job[0], job[1]
        if kind == "ended":  # the machine said how the offer ended: no read
            frame = _closed_frame(job[2], job[3])
            for connection in list(self.sockets.get((tenant, agent), ())):
                connection.reply(frame)
            return
        if kind != "pending" and (tenant, agent) not in self.sockets:
            return  # gone meanwhile: nothing to build
        if kind == "popup":
            row = job[2]
            prefetched = self._forget_prefetched((tenant, row["id"]))
            if prefetched is not None:
                try:
                    context = await prefetched[2]
                except (Exception, asyncio.CancelledError):
                    context = None  # read it now
                if context is not None:
                    frame = await self._popup(tenant, row, *context)
                    for connection in list(self.sockets.get((tenant, agent), ())):
                        connection.reply(frame)
                    return
        async with self._reads, self._connection() as conn:
            await self._do(conn, job)

    async def _do(self, conn, job: tuple) -> None:
        kind, (tenant, agent) = job[0], job[1]
        if kind == "pending":  # a new connection sees the offers already made to it
            connection = job[2]
            for row in await rr.offered_to(conn, tenant, agent):
                connection.reply(await self.popup_frame(conn, tenant, row))
            return
        targets = list(self.sockets.get((tenant, agent), ()))
        if not targets:
            return
        frame = await self.popup_frame(conn, tenant, job[2])
        for connection in targets:
            connection.reply(frame)

    async def popup_frame(self, conn, tenant: str, row: dict) -> dict:
        return await self._popup(
            tenant, row, *await _context(conn, tenant, row["contact"], row["id"])
        )

    async def _popup(self, tenant: str, row: dict, past: list, tickets: list) -> dict:
        zone = await self.zone_of(tenant)
        return {
            "type": "popup",
            "offer_id": row["offer_id"],
            "expires_at": instant(row["offer_expires_at"]),
            "conversation": wire_row(row, zone),
            "customer": {
                "id": row["customer_id"] or row["contact"],
                "name": row["customer_name"],
                "email": row["customer_email"],
                "phone": row["customer_phone"],
                "contact": row["contact"],
            },
            "history": [wire_row(p, zone) for p in past],
            "tickets": [
                {
                    "ticket_id": t["ticket_id"],
                    "conversation_id": t["conversation_id"],
                    "system": t["system"],
                    "url": t["url"],
                    "linked_at": instant(t["linked_at"]),
                }
                for t in tickets
            ],
        }


async def _context(conn, tenant: str, contact: str, conversation_id: str):
    """A popup's history (the contact's five latest other conversations) and tickets."""
    past = await rr.history(conn, tenant, contact, conversation_id)
    ids = [conversation_id, *(p["id"] for p in past)]
    return past, await rr.tickets_of_contact(conn, tenant, ids)


def _retrieve(task: asyncio.Task) -> None:
    """A prefetch nobody awaited: its error is of no interest (the popup reads again)."""
    if not task.cancelled():
        task.exception()


def _closed_frame(offer_id: str, reason: str) -> dict:
    return {"type": "popup_closed", "offer_id": offer_id, "reason": reason}
