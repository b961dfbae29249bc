"""Ingest: events in, through the state machine, stored in one transaction, then news
of the committed rows on the bus.

Per request: lock the conversations it names (fixed order), load them and the event
ids already seen, run every event through the machine in order, write the rows, the
event log and what the effects record, commit, and publish one bus message with the
changed rows and their new versions. Nothing is half-applied: an error anywhere rolls
the whole request back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError

from state_machine import (
    Conversation,
    InvalidEvent,
    MessageStatusChanged,
    RecordingAdded,
    TicketLinked,
    TranscriptAppended,
    TransitionError,
    apply,
    parse_event,
)

from . import faults
from . import models as m
from . import repository as repo
from .bus import Bus
from .clock import SYSTEM_CLOCK, Clock
from .db import Database, is_retryable, is_unavailable
from .metrics import EVENTS

log = logging.getLogger("switchboard.ingest")

MAX_GROUP_EVENTS = 1000  # events committed together at most
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


@dataclass
class _Batch:
    """What one request changes, gathered before anything is written."""

    tenant: str
    now: Any
    current: dict[str, Conversation | None]
    changed: dict[str, Conversation] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    customers: dict[tuple, dict] = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)
    statuses: list[dict] = field(default_factory=list)
    tickets: list[dict] = field(default_factory=list)
    recordings: list[dict] = field(default_factory=list)


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


class DatabaseUnavailable(Exception):
    """The database could not be reached: the request is answered 503, nothing stored."""


class Ingest:
    def __init__(self, db: Database, bus: Bus, clock: Clock = SYSTEM_CLOCK):
        self.db = db
        self.bus = bus
        self.clock = clock
        # SQLite has one writer; PostgreSQL overlaps one group's I/O with another's work.
        self.workers = 1 if db.is_sqlite else 2
        self._waiting: deque[_Request] = deque()
        self._wake = asyncio.Event()
        self._workers: list[asyncio.Task] = []

    async def submit(self, tenant: str, envelopes: list[Any]) -> list[Outcome]:
        """Judge, store and announce a request's events; one outcome per envelope."""
        request = _Request(tenant, envelopes, asyncio.get_running_loop().create_future())
        self._waiting.append(request)
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._work(), name=f"ingest-{n}") for n in range(self.workers)
            ]
        self._wake.set()
        return await request.done

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        for worker in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        self._workers = []

    async def _work(self) -> None:
        """Group commit: the requests waiting when a worker is free are committed in
        one transaction (per tenant, in arrival order), so concurrent single-event
        requests share their round trips. Each request still gets all or nothing."""
        while True:
            if not self._waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._commit_group(self._take_group())

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

    async def _commit_group(self, group: list[_Request]) -> None:
        tenant = group[0].tenant
        envelopes = [envelope for request in group for envelope in request.envelopes]
        try:
            outcomes, published = await self._commit_with_retries(tenant, envelopes)
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
                    await self._commit_group([request])
                return
            _settle(group[0], exception=exc)
            return
        for outcome in outcomes:
            EVENTS.labels(outcome.outcome).inc()
        start = 0
        for request in group:
            end = start + len(request.envelopes)
            _settle(request, result=outcomes[start:end])
            start = end
        if published:
            faults.after_commit()
            self.bus.post(tenant, published)  # never waits on the bus (docs/faults.md)

    async def _commit_with_retries(self, tenant: str, envelopes: list[Any]):
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                return await self._submit_once(tenant, envelopes)
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

    async def _submit_once(self, tenant: str, envelopes: list[Any]):
        now = self.clock.now()
        parsed: list[Any] = []
        for envelope in envelopes:
            try:
                event = parse_event(envelope)
                _check_storable(envelope)
                parsed.append(event)
            except InvalidEvent as error:
                parsed.append(error)
        conversation_ids = {
            event.conversation_id for event in parsed if not isinstance(event, InvalidEvent)
        }
        event_ids = {event.event_id for event in parsed if not isinstance(event, InvalidEvent)}

        async with self.db.write() as conn:
            await repo.lock_conversations(conn, tenant, conversation_ids)
            rows = await repo.load_conversation_rows(conn, tenant, conversation_ids)
            seen = await repo.existing_event_ids(conn, tenant, event_ids)
            batch = _Batch(
                tenant,
                now,
                {
                    cid: repo.conversation_from_row(rows[cid]) if cid in rows else None
                    for cid in conversation_ids
                },
            )
            outcomes = [
                self._judge(batch, envelope, event, seen)
                for envelope, event in zip(envelopes, parsed, strict=True)
            ]
            if not batch.changed and not batch.events and not batch.rejected:
                return outcomes, None
            published = None
            if batch.changed:
                published = await self._write_conversations(conn, batch, rows)
            await repo.insert_events(conn, batch.events)
            await repo.insert_rejected(conn, batch.rejected)
            await repo.upsert_customers(conn, list(batch.customers.values()))
            await repo.insert_messages(conn, batch.messages)
            await repo.set_message_statuses(conn, batch.statuses)
            await repo.insert_tickets(conn, batch.tickets)
            await repo.insert_recordings(conn, batch.recordings)
        return outcomes, published

    def _judge(self, batch: _Batch, envelope: Any, event: Any, seen: set[str]) -> Outcome:
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
            batch.rejected.append(self._rejected_row(batch, ids, outcome))
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
                batch.rejected.append(self._rejected_row(batch, envelope, outcome))
            else:
                seen.add(event.event_id)
                batch.events.append(self._event_row(batch, envelope, event, outcome))
            return outcome
        seen.add(event.event_id)
        new = applied.conversation
        batch.current[conversation_id] = new
        batch.changed[conversation_id] = new
        outcome = Outcome(event.event_id, "applied", conversation_id, new.version)
        batch.events.append(self._event_row(batch, envelope, event, outcome))
        self._record_effects(batch, event, new, applied.effects)
        return outcome

    def _record_effects(self, batch: _Batch, event, conversation: Conversation, effects) -> None:
        tenant, cid = batch.tenant, conversation.id
        customer = getattr(event, "customer", None)
        if customer is not None:
            key = customer.id or conversation.contact
            batch.customers[(tenant, key)] = {
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
                batch.messages.append(
                    {
                        "tenant_id": tenant,
                        "conversation_id": cid,
                        "message_id": effect.message_id,
                        "sender": effect.sender,
                        "text": effect.text,
                        "at": effect.at,
                        "status": None,
                    }
                )
            elif isinstance(effect, MessageStatusChanged):
                batch.statuses.append(
                    {
                        "k_tenant": tenant,
                        "k_conversation": cid,
                        "k_message": effect.message_id,
                        "status": effect.status,
                    }
                )
            elif isinstance(effect, TicketLinked):
                batch.tickets.append(
                    {
                        "tenant_id": tenant,
                        "conversation_id": cid,
                        "ticket_id": effect.ticket_id,
                        "system": effect.system,
                        "url": effect.url,
                        "linked_at": event.occurred_at,
                    }
                )
            elif isinstance(effect, RecordingAdded):
                batch.recordings.append(
                    {
                        "tenant_id": tenant,
                        "conversation_id": cid,
                        "id": effect.recording_id,
                        "duration_s": effect.duration_s,
                        "content_type": effect.content_type,
                        "created_at": event.occurred_at,
                    }
                )

    async def _write_conversations(self, conn, batch: _Batch, stored: dict) -> dict:
        """Write the changed rows; return the bus message announcing them: each row's
        new image and, for a row that existed, the old values of what changed (so
        that every process can tell a row entering a view from one leaving it)."""
        change_seq, token = await repo.commit_stamp(conn)
        wanted = {
            c.agent_id
            for c in batch.changed.values()
            if c.agent_id and (c.id not in stored or stored[c.id]["agent_id"] != c.agent_id)
        }
        names = await repo.agent_names(conn, batch.tenant, wanted)
        inserts, updates, published = [], [], []
        for conversation in batch.changed.values():
            row = repo.conversation_values(conversation)
            old = stored.get(conversation.id)
            if conversation.agent_id is None:
                agent_name = None
            elif conversation.agent_id in names:
                agent_name = names[conversation.agent_id]
            elif old is not None and old["agent_id"] == conversation.agent_id:
                agent_name = old["agent_name"]
            else:  # a new agent without an agents row has no name (not the last one's)
                agent_name = None
            row.update(
                tenant_id=batch.tenant,
                agent_name=agent_name,
                change_seq=change_seq,
                updated_at=batch.now,
            )
            if old is None:
                inserts.append(row)
                before = None
            else:
                updates.append(row)
                before = {
                    name: old[name]
                    for name, value in row.items()
                    if name not in UNANNOUNCED and old[name] != value
                }
            # prev_seq: when the old version was committed, so that a reader that never
            # heard of it can tell whether it may have been lost (server/live.py).
            prev_seq = None if old is None else old["change_seq"]
            published.append({"row": row, "before": before, "prev_seq": prev_seq})
        await repo.insert_conversations(conn, inserts)
        await repo.update_conversations(conn, updates)
        return {"seq": change_seq, "token": token, "rows": published}

    def _event_row(self, batch: _Batch, envelope: dict, event, outcome: Outcome) -> dict:
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
            "data": _json_safe(envelope.get("data") or {}),
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


# Event fields kept in length-bounded columns (PostgreSQL enforces the length).
_BOUNDED = {
    "contact": m.customers.c.id,  # the customer's key when the event names no id
    "customer.id": m.customers.c.id,
    "team": m.conversations.c.team,
    "agent_id": m.conversations.c.agent_id,
    "offer_id": m.conversations.c.offer_id,
    "message_id": m.messages.c.message_id,
    "ticket_id": m.tickets.c.ticket_id,
    "recording_id": m.recordings.c.id,
    "content_type": m.recordings.c.content_type,
}


def _check_storable(envelope: dict) -> None:
    """What the parser accepts but a database cannot store is invalid data too, so that
    it is rejected like any bad field instead of failing the whole request: NUL
    characters (PostgreSQL text), NaN and infinities (no JSON form), and values longer
    than their column."""
    _check_value(envelope, "")
    data = envelope.get("data")
    for path, column in _BOUNDED.items():
        value = data
        for key in path.split("."):
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and len(value) > column.type.length:
            raise InvalidEvent(
                "invalid_data",
                f"data.{path} is longer than {column.type.length} characters",
                path,
            )


MAX_DATA_DEPTH = 32  # levels of objects and lists in an envelope


def _check_value(envelope: Any, path: str) -> None:
    """Strings with NUL, non-finite numbers, or nesting deeper than MAX_DATA_DEPTH
    anywhere in the envelope. Iterative, so that no depth the body parser allowed can
    exhaust the stack; the envelope stored later is then shallow."""
    stack = [(envelope, path, 0)]
    while stack:
        value, path, depth = stack.pop()
        field = path.removeprefix("data.")
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidEvent("invalid_data", f"{path} must not contain NUL characters", field)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidEvent("invalid_data", f"{path} must be a finite number", field)
        elif isinstance(value, dict | list | tuple):
            if depth >= MAX_DATA_DEPTH:
                raise InvalidEvent(
                    "invalid_data", f"{path} is nested deeper than {MAX_DATA_DEPTH} levels", field
                )
            children = []
            if isinstance(value, dict):
                for key, item in value.items():
                    name = str(key)
                    if "\x00" in name:
                        raise InvalidEvent(
                            "invalid_data",
                            f"{path or 'the event'} has a key with a NUL character: {name[:100]!r}",
                            field or None,
                        )
                    name = name[:100]
                    children.append((item, f"{path}.{name}" if path else name, depth + 1))
            else:
                children = [(item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)]
            stack.extend(reversed(children))


def _json_safe(value: Any) -> Any:
    """The event's data as stored in the log (msgpack may carry datetimes and bytes)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value
