"""Ingest: events in, through the state machine, stored in one transaction, then news
of the committed rows on the bus.

Per request: lock the conversations it names (fixed order), load them and the event
ids already seen, run every event through the machine in order, write the rows, the
event log and what the effects record, commit, and publish one bus message with the
changed rows and their new versions. Nothing is half-applied: an error anywhere rolls
the whole request back.

Owns: the order of that work, the rows and the event log, what the machine's effects
record (transcript, message statuses, tickets, recordings), and the bus message. What
else a change calls for in the same transaction is recorded by the `Alongside`
recorders it is built with (the composition root gives it the routing's offers and
timers); each sees every applied event of the batch with the conversation before and
after it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.exc import DBAPIError, IntegrityError

from server.bus import Bus
from server.core import faults
from server.core.clock import SYSTEM_CLOCK, Clock
from server.core.metrics import EVENTS
from server.core.tasks import cancel_and_wait
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database, DatabaseUnavailable, is_retryable, is_unavailable
from state_machine import (
    Applied,
    Conversation,
    Event,
    InvalidEvent,
    MessageStatusChanged,
    OfferEnded,
    OfferStarted,
    RecordingAdded,
    TicketLinked,
    TranscriptAppended,
    TransitionError,
    apply,
    parse_event,
)

log = logging.getLogger("switchboard.ingest")

MAX_EVENTS_PER_REQUEST = 5000  # events one request may submit
MAX_GROUP_EVENTS = 250  # events committed together at most
PIPELINE_DEPTH = 2  # groups in the database at once
MAX_ATTEMPTS = 3  # a deadlock or a unique race with another batch retries the request
# Columns that change with every write and tell a reader nothing about the row.
UNANNOUNCED = frozenset({"change_seq", "updated_at", "tenant_id"})


@dataclass
class Outcome:
    event_id: Any
    outcome: str
    conversation_id: Any
    version: int | None = None
    code: str | None = None
    message: str | None = None

    def to_wire(self) -> dict[str, Any]:
        wire = {
            "event_id": self.event_id,
            "outcome": self.outcome,
            "conversation_id": self.conversation_id,
            "version": self.version,
        }
        if self.code is not None:
            wire["code"] = self.code
            wire["message"] = self.message
        return wire


@dataclass(frozen=True, slots=True)
class Change:
    """One applied event: the conversation before it (None: the event created it) and
    what the machine made of it."""

    event: Event
    before: Conversation | None
    applied: Applied

    @property
    def after(self) -> Conversation:
        return self.applied.conversation

    @property
    def effects(self) -> tuple:
        return self.applied.effects


@dataclass
class _Batch:
    """What one transaction changes, gathered before anything is written."""

    tenant: str
    now: datetime
    current: dict[str, Conversation | None]
    changed: dict[str, Conversation] = field(default_factory=dict)
    # Every applied event, in order: what the Alongside recorders are given.
    changes: list[Change] = field(default_factory=list)
    rows: repo.IngestRows = field(default_factory=repo.IngestRows)
    # Per conversation, its offers started and ended, in order (the bus message's).
    offers: dict[str, list[dict]] = field(default_factory=dict)
    # One row per key, the last one (see repo.IngestRows); messages keep the first,
    # as the log's ON CONFLICT DO NOTHING does.
    customers: dict[str, dict] = field(default_factory=dict)
    messages: dict[tuple, dict] = field(default_factory=dict)
    statuses: dict[tuple, dict] = field(default_factory=dict)
    tickets: dict[tuple, dict] = field(default_factory=dict)
    recordings: dict[tuple, dict] = field(default_factory=dict)
    # Conversations without a customer name to which the customer wrote: their name
    # is the customer's known at the contact, if one is known by now.
    nameless: set[str] = field(default_factory=set)


@dataclass
class _Request:
    tenant: str
    envelopes: list[Any]
    done: asyncio.Future


def _settle(request: _Request, result=None, exception: BaseException | None = None) -> None:
    if request.done.done():  # the client went away; its events are stored all the same
        return
    if exception is not None:
        request.done.set_exception(exception)
    else:
        request.done.set_result(result)


class Alongside(Protocol):
    """Records what a batch's applied events call for beyond the rows, in the same
    transaction: `changes` is every applied event of the batch, in order; rows added to
    `rows` are written in the batch's one write statement; `conn` is the batch's
    connection (its locks held), for anything else. Raising rolls the batch back."""

    async def record(
        self,
        tenant: str,
        now: datetime,
        changes: list[Change],
        rows: repo.IngestRows,
        conn: repo.IngestConnection,
    ) -> None: ...


class Ingest:
    def __init__(
        self,
        db: Database,
        bus: Bus,
        clock: Clock = SYSTEM_CLOCK,
        alongside: Iterable[Alongside] = (),
    ):
        self.db = db
        self.bus = bus
        self.clock = clock
        self.alongside = tuple(alongside)
        self._waiting: deque[_Request] = deque()
        self._wake = asyncio.Event()
        # One task takes the groups, in arrival order. A group's database work overlaps
        # the next group's CPU work: the next group is taken once the one before has
        # handed its rows to the database (see _work).
        self._worker: asyncio.Task | None = None
        self._groups: set[asyncio.Task] = set()

    async def submit(self, tenant: str, envelopes: list[Any]) -> list[Outcome]:
        """Judge, store and announce a request's events; one outcome per envelope."""
        request = _Request(tenant, envelopes, asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="ingest")
        self._wake.set()
        return await request.done

    async def close(self) -> None:
        await cancel_and_wait([*self._groups, self._worker])
        self._worker = None
        self._groups.clear()

    async def _work(self) -> None:
        """Group commit: the requests of a tenant waiting when the writer is free are
        committed in one transaction (in arrival order, up to MAX_GROUP_EVENTS), so
        concurrent requests share their round trips. Each request still gets all or
        nothing. Pipelined: the next group is taken as soon as the one before has
        computed its rows and sent them, so that one group's CPU work (parse, judge,
        build) runs while PostgreSQL writes and commits the one before, at most
        PIPELINE_DEPTH groups at once. Groups naming the same conversation still go
        one after the other: the later one's lock waits for the earlier one's commit."""
        slots = asyncio.Semaphore(PIPELINE_DEPTH)
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            await slots.acquire()
            handed = asyncio.Event()
            task = asyncio.create_task(self._run_group(self._take_group(), handed, slots))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)
            await handed.wait()

    async def _run_group(
        self, group: list[_Request], handed: asyncio.Event, slots: asyncio.Semaphore
    ) -> None:
        try:
            await self._commit_group(group, handed)
        finally:
            handed.set()
            slots.release()

    def _take_group(self) -> list[_Request]:
        first = self._waiting.popleft()
        group, size, rest = [first], len(first.envelopes), deque()
        while self._waiting and size < MAX_GROUP_EVENTS:
            request = self._waiting.popleft()
            if request.tenant == first.tenant:
                group.append(request)
                size += len(request.envelopes)
            else:
                rest.append(request)
        self._waiting.extendleft(reversed(rest))
        return group

    async def _commit_group(self, group: list[_Request], handed: asyncio.Event) -> None:
        tenant = group[0].tenant
        envelopes = [envelope for request in group for envelope in request.envelopes]
        try:
            outcomes, published = await self._commit_with_retries(tenant, envelopes, handed)
        except DatabaseUnavailable as exc:
            for request in group:
                _settle(request, exception=exc)
            return
        except Exception as exc:
            log.warning(
                "ingest group failed",
                exc_info=True,
                extra={"tenant": tenant, "requests": len(group)},
            )
            if len(group) > 1:  # let only the request that fails fail
                for request in group:
                    await self._commit_group([request], handed)
                return
            _settle(group[0], exception=exc)
            return
        for name, count in Counter(outcome.outcome for outcome in outcomes).items():
            EVENTS.labels(name).inc(count)
        start = 0
        for request in group:
            end = start + len(request.envelopes)
            _settle(request, result=outcomes[start:end])
            start = end
        if published:
            self._publish(tenant, published)

    def _publish(self, tenant: str, message: dict) -> None:
        """The publish step: news of a committed group, after the commit and after the
        requests have their answers, handed to the bus's bounded outbox. It never waits
        on Redis; what the outbox drops, catch-up recovers (docs/faults.md)."""
        faults.after_commit()
        self.bus.post(tenant, message)

    async def _commit_with_retries(self, tenant: str, envelopes: list[Any], handed: asyncio.Event):
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await self._submit_once(tenant, envelopes, handed)
            except IntegrityError:
                if attempt == MAX_ATTEMPTS:
                    raise
                log.info("ingest retry after a unique race", extra={"tenant": tenant})
            except DBAPIError as exc:
                if is_retryable(exc) and attempt < MAX_ATTEMPTS:
                    log.info("ingest retry after %s", type(exc.orig).__name__)
                    continue
                if exc.connection_invalidated or is_unavailable(exc):
                    raise DatabaseUnavailable(str(exc.orig)) from exc
                raise
            except (OSError, TimeoutError) as exc:
                raise DatabaseUnavailable(repr(exc)) from exc
        raise AssertionError("unreachable")

    async def _submit_once(self, tenant: str, envelopes: list[Any], handed: asyncio.Event):
        now = self.clock.now()
        parsed: list[tuple[Any, dict | None]] = []  # (event or InvalidEvent, stored data)
        conversation_ids, event_ids, agent_ids = set(), set(), set()
        for envelope in envelopes:
            try:
                event = parse_event(envelope, now)
                parsed.append((event, _storable_data(envelope)))
            except InvalidEvent as error:
                parsed.append((error, None))
                continue
            conversation_ids.add(event.conversation_id)
            event_ids.add(event.event_id)
            # The machine takes a conversation's agent from an event's agent_id: these
            # are the agents whose names a changed row may need.
            agent_id = getattr(event, "agent_id", None)
            if agent_id:
                agent_ids.add(agent_id)

        async with self.db.ingest_write() as conn:
            change_seq, token = await repo.lock_and_stamp(conn, tenant, conversation_ids)
            state = await repo.load_for_ingest(conn, tenant, conversation_ids, event_ids, agent_ids)
            rows, seen = state.rows, state.seen
            batch = _Batch(
                tenant,
                now,
                {
                    cid: repo.conversation_from_row(rows[cid]) if cid in rows else None
                    for cid in conversation_ids
                },
            )
            outcomes = [
                self._judge(batch, envelope, event, data, seen)
                for envelope, (event, data) in zip(envelopes, parsed, strict=True)
            ]
            written = batch.rows
            if not batch.changed and not written.events and not written.rejected:
                return outcomes, None
            published = None
            if batch.changed:
                published = await self._conversation_rows(
                    batch, state, agent_ids, change_seq, token
                )
            written.customers = list(batch.customers.values())
            written.messages = list(batch.messages.values())
            written.statuses = list(batch.statuses.values())
            written.tickets = list(batch.tickets.values())
            written.recordings = list(batch.recordings.values())
            if batch.changes:
                for recorder in self.alongside:
                    await recorder.record(tenant, now, batch.changes, written, conn)
            handed.set()  # the next group may start while this one is written
            await repo.write_ingest_rows(conn, written)
        return outcomes, published

    def _judge(
        self, batch: _Batch, envelope: Any, event: Any, data: dict | None, seen: set[str]
    ) -> Outcome:
        if isinstance(event, InvalidEvent):
            ids = envelope if isinstance(envelope, dict) else {}
            outcome = Outcome(
                _scalar(ids.get("event_id")),
                "rejected",
                _scalar(ids.get("conversation_id")),
                None,
                event.code,
                event.message,
            )
            batch.rows.rejected.append(self._rejected_row(batch, ids, outcome))
            return outcome
        conversation_id = event.conversation_id
        current = batch.current[conversation_id]
        if event.event_id in seen:
            return Outcome(
                event.event_id, "duplicate", conversation_id, current.version if current else None
            )
        try:
            applied = apply(current, event)
        except TransitionError as error:
            outcome = Outcome(
                event.event_id,
                error.outcome,
                conversation_id,
                current.version if current else None,
                error.code,
                error.message,
            )
            if error.outcome == "rejected":
                batch.rows.rejected.append(self._rejected_row(batch, envelope, outcome))
            else:
                seen.add(event.event_id)
                batch.rows.events.append(self._event_row(batch, event, data, outcome))
            return outcome
        seen.add(event.event_id)
        new = applied.conversation
        batch.current[conversation_id] = new
        batch.changed[conversation_id] = new
        batch.changes.append(Change(event, current, applied))
        outcome = Outcome(event.event_id, "applied", conversation_id, new.version)
        batch.rows.events.append(self._event_row(batch, event, data, outcome))
        self._record_effects(batch, event, new, applied.effects)
        return outcome

    def _record_effects(self, batch: _Batch, event, conversation: Conversation, effects) -> None:
        tenant, cid = batch.tenant, conversation.id
        if not conversation.customer_name and getattr(event, "sender", None) == "customer":
            batch.nameless.add(cid)
        customer = getattr(event, "customer", None)
        if customer is not None:
            key = customer.id or conversation.contact
            batch.customers[key] = {
                "tenant_id": tenant,
                "id": key,
                "name": customer.name,
                "email": customer.email,
                "phone": customer.phone,
                "contact": conversation.contact,
                "updated_at": batch.now,
            }
        for effect in effects:
            if isinstance(effect, TranscriptAppended):
                batch.messages.setdefault(
                    (cid, effect.message_id),
                    {
                        "tenant_id": tenant,
                        "conversation_id": cid,
                        "message_id": effect.message_id,
                        "sender": effect.sender,
                        "text": effect.text,
                        "at": effect.at,
                        "status": None,
                    },
                )
            elif isinstance(effect, MessageStatusChanged):
                key = (cid, effect.message_id)
                batch.statuses[key] = {
                    "k_tenant": tenant,
                    "k_conversation": cid,
                    "k_message": effect.message_id,
                    "status": effect.status,
                }
                if key in batch.messages:  # stored by this transaction: set it on the row
                    batch.messages[key]["status"] = effect.status
            elif isinstance(effect, TicketLinked):
                batch.tickets[(cid, effect.ticket_id)] = {
                    "tenant_id": tenant,
                    "conversation_id": cid,
                    "ticket_id": effect.ticket_id,
                    "system": effect.system,
                    "url": effect.url,
                    "linked_at": event.occurred_at,
                }
            elif isinstance(effect, OfferStarted):
                batch.offers.setdefault(cid, []).append(
                    {
                        "offer_id": effect.offer_id,
                        "agent_id": effect.agent_id,
                        "expires_at": effect.expires_at,
                    }
                )
            elif isinstance(effect, OfferEnded):
                batch.offers.setdefault(cid, []).append(
                    {
                        "offer_id": effect.offer_id,
                        "agent_id": effect.agent_id,
                        "reason": effect.reason,
                    }
                )
            elif isinstance(effect, RecordingAdded):
                batch.recordings.setdefault(
                    (cid, effect.recording_id),
                    {
                        "tenant_id": tenant,
                        "conversation_id": cid,
                        "id": effect.recording_id,
                        "duration_s": effect.duration_s,
                        "content_type": effect.content_type,
                        "created_at": event.occurred_at,
                    },
                )

    async def _conversation_rows(
        self,
        batch: _Batch,
        state: repo.IngestState,
        named: set[str],
        change_seq: int,
        token: int,
    ) -> dict:
        """Put the changed rows into batch.rows; return the bus message announcing them:
        each row's new image and, for a row that existed, the old values of what
        changed (so that every process can tell a row entering a view from one
        leaving it), and, when the batch started or ended offers of the row, `offers`:
        each offer started ({offer_id, agent_id, expires_at}) or ended ({offer_id,
        agent_id, reason}), in order (the machine's OfferStarted and OfferEnded, which
        popups follow). `named`: the agents whose names `state` holds (when they
        exist)."""
        stored, names = state.rows, state.agent_names
        wanted = {
            c.agent_id
            for c in batch.changed.values()
            if c.agent_id and (c.id not in stored or stored[c.id]["agent_id"] != c.agent_id)
        }
        if not wanted <= named:  # an agent no event named: the machine changed; ask
            async with self.db.read() as conn:  # names need no lock: outside the write
                names = {**names, **await repo.agent_names(conn, batch.tenant, wanted - named)}
        names = {agent: names[agent] for agent in wanted if agent in names}
        known: dict[str, str] = {}  # conversation -> the name of its contact's customer
        for cid in batch.nameless:
            conversation = batch.changed.get(cid)
            if conversation is not None and not conversation.customer_name:
                async with self.db.read() as conn:
                    customer = await repo.customer_of_contact(
                        conn, batch.tenant, conversation.contact
                    )
                if customer is not None and customer["name"]:
                    known[cid] = customer["name"]
        published = []
        for conversation in batch.changed.values():
            row = repo.conversation_values(conversation)
            old = stored.get(conversation.id)
            if conversation.agent_id is None:
                agent_name = None
            elif conversation.agent_id in names:
                agent_name = names[conversation.agent_id]
            elif old is not None and old["agent_id"] == conversation.agent_id:
                agent_name = old["agent_name"]
            else:  # a user without an agents row (a supervisor who initiated it): its id
                agent_name = conversation.agent_id
            row["tenant_id"] = batch.tenant
            row["agent_name"] = agent_name
            if conversation.id in known:
                row["customer_name"] = known[conversation.id]
            row["change_seq"] = change_seq
            row["updated_at"] = batch.now
            if old is None:
                batch.rows.new_conversations.append(row)
                before = None
            else:
                batch.rows.changed_conversations.append(row)
                before = {
                    name: old[name]
                    for name, value in row.items()
                    if name not in UNANNOUNCED and old[name] != value
                }
            # prev_seq: when the old version was committed, so that a reader that never
            # heard of it can tell whether it may have been lost (server/live/windows.py).
            prev_seq = None if old is None else old["change_seq"]
            item = {"row": row, "before": before, "prev_seq": prev_seq}
            offers = batch.offers.get(conversation.id)
            if offers:
                item["offers"] = offers
            published.append(item)
        return {"seq": change_seq, "token": token, "rows": published}

    def _event_row(self, batch: _Batch, event, data: dict, outcome: Outcome) -> dict:
        return {
            "tenant_id": batch.tenant,
            "event_id": event.event_id,
            "conversation_id": event.conversation_id,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "received_at": batch.now,
            "outcome": outcome.outcome,
            "version": outcome.version or 0,
            "message": outcome.message,
            "data": data,
        }

    def _rejected_row(self, batch: _Batch, envelope: dict, outcome: Outcome) -> dict:
        return {
            "tenant_id": batch.tenant,
            "event_id": _text(outcome.event_id),
            "conversation_id": _text(outcome.conversation_id),
            "type": _text(envelope.get("type")),
            "code": outcome.code,
            "message": (outcome.message or "").replace("\x00", "\ufffd"),
            "received_at": batch.now,
        }


def _scalar(value: Any) -> Any:
    """Echo an id back only when it is a plain value (a malformed one may be anything)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None  # NaN and infinities have no JSON form
    return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    """A rejected event's id or type as stored: PostgreSQL text cannot hold NUL."""
    return None if value is None else str(value)[:1000].replace("\x00", "\ufffd")


# Event fields kept in length-bounded columns (PostgreSQL enforces the length), as
# nested bounds: a key's maximum length, or the bounds of the object under it.
_BOUNDS = {
    "data": {
        "contact": m.customers.c.id.type.length,  # the customer's key when no id is given
        "customer": {"id": m.customers.c.id.type.length},
        "team": m.conversations.c.team.type.length,
        "agent_id": m.conversations.c.agent_id.type.length,
        "offer_id": m.conversations.c.offer_id.type.length,
        "message_id": m.messages.c.message_id.type.length,
        "ticket_id": m.tickets.c.ticket_id.type.length,
        "recording_id": m.recordings.c.id.type.length,
        "content_type": m.recordings.c.content_type.type.length,
    }
}
MAX_DATA_DEPTH = 32  # levels of objects and lists in an envelope


def _storable_data(envelope: dict) -> dict:
    """The event's data as the log stores it (msgpack may carry datetimes and bytes),
    after checking that a database can store the whole envelope. What the parser
    accepts but a database cannot store is invalid data too, so that it is rejected
    like any bad field instead of failing the whole request: NUL characters
    (PostgreSQL text), NaN and infinities (no JSON form), nesting deeper than
    MAX_DATA_DEPTH, and values longer than their column."""
    try:
        return _stored(envelope, 0, _BOUNDS).get("data") or {}
    except _Unstorable as error:
        path = error.path()
        raise InvalidEvent(
            "invalid_data", f"{path or 'the event'} {error.problem}", _leaf(path) or None
        ) from None


class _Unstorable(Exception):
    """Raised deep in _stored; each level on the way out adds its step to the path, so
    that no path is formatted for the values that are fine."""

    def __init__(self, problem: str):
        self.problem = problem
        self.steps: list[str | int] = []  # innermost first: a key, or a list index

    def path(self) -> str:
        path = ""
        for step in reversed(self.steps):
            if isinstance(step, int):
                path = f"{path}[{step}]"
            else:
                path = f"{path}.{step}" if path else step
        return path


def _stored(value: Any, depth: int, bounds: dict | None = None) -> Any:
    """`value` as stored, checked in document order (a dict's keys before its values).
    Recursive, but never deeper than MAX_DATA_DEPTH levels, however deep the body
    parser let the value be. The exact types JSON and msgpack decode to come first."""
    kind = type(value)
    if kind is str:
        if "\x00" in value:
            raise _Unstorable("must not contain NUL characters")
        return value
    if kind is dict:
        if depth >= MAX_DATA_DEPTH:
            raise _Unstorable(f"is nested deeper than {MAX_DATA_DEPTH} levels")
        for key in value:
            name = key if type(key) is str else str(key)
            if "\x00" in name:
                raise _Unstorable(f"has a key with a NUL character: {name[:100]!r}")
        stored = {}
        for key, item in value.items():
            name = key if type(key) is str else str(key)
            bound = bounds.get(name) if bounds is not None else None
            try:
                if type(bound) is int:
                    if isinstance(item, str) and len(item) > bound:
                        raise _Unstorable(f"is longer than {bound} characters")
                    bound = None
                stored[name] = _stored(item, depth + 1, bound)
            except _Unstorable as error:
                error.steps.append(name[:100])
                raise
        return stored
    if kind is int or kind is bool or value is None:
        return value
    if isinstance(value, str | dict):  # a subclass: as its base
        return _stored(str(value) if isinstance(value, str) else dict(value), depth, bounds)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unstorable("must be a finite number")
        return value
    if isinstance(value, list | tuple):
        if depth >= MAX_DATA_DEPTH:
            raise _Unstorable(f"is nested deeper than {MAX_DATA_DEPTH} levels")
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_stored(item, depth + 1))
            except _Unstorable as error:
                error.steps.append(index)
                raise
        return items
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


def _leaf(path: str) -> str:
    return path.removeprefix("data.")
