"""Builders shared by the state-machine tests: events, conversations, assertions.

Every event is built from a wire envelope through `parse_event`, and every
conversation by applying real events from creation, so the tests drive the machine
exactly as the server does. Times are seconds after T0.
"""

from __future__ import annotations

import dataclasses
import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from state_machine import (
    Applied,
    Conversation,
    Event,
    Rejected,
    Stale,
    Status,
    apply,
    parse_event,
)

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
CID = "conv-1"

S = Status


def at(seconds: float) -> datetime:
    """The instant `seconds` after T0."""
    return T0 + timedelta(seconds=seconds)


# Valid `data` for every event type; `event()` overrides single keys.
DEFAULT_DATA: dict[str, dict[str, Any]] = {
    "conversation.created": {
        "channel": "call",
        "contact": "+15550100",
        "customer": {"name": "Ann Lee", "id": "cust-7", "email": "ann@example.com"},
        "contacto_number": "+15559000",
    },
    "conversation.initiated": {
        "channel": "call",
        "contact": "+15550100",
        "agent_id": "a1",
        "contacto_number": "+15559000",
    },
    "routing.out_of_hours": {"team": "sales"},
    "routing.enqueued": {"team": "sales"},
    "routing.enqueue_failed": {"team": "sales", "reason": "queue full"},
    "routing.assignment_failed": {"reason": "nobody logged in"},
    "routing.offered": {"agent_id": "a1", "offer_id": "o1", "expires_at": at(32)},
    "routing.offer_declined": {"agent_id": "a1", "offer_id": "o1", "reason": "rejected"},
    "agent.accepted": {"agent_id": "a1", "offer_id": "o1"},
    "routing.queue_timeout": {},
    "routing.transferred": {"team": "billing"},
    "media.customer_dropped": {},
    "media.ringing": {},
    "media.answered": {},
    "media.no_answer": {"reason": "no_answer"},
    "media.message": {"message_id": "m1", "sender": "customer", "text": "hello"},
    "media.message_status": {"message_id": "m1", "status": "delivered"},
    "media.channel_added": {"channel": "chat"},
    "media.hangup": {"source": "customer"},
    "media.recording_ready": {
        "recording_id": "r1",
        "duration_s": 61.5,
        "content_type": "audio/mpeg",
    },
    "wrapup.submitted": {"disposition": "resolved", "note": "refund issued"},
    "wrapup.timeout": {},
    "csat.received": {"score": 4},
    "ticket.linked": {"ticket_id": "T-1", "system": "zendesk", "url": "https://t.example/1"},
}

_event_ids = itertools.count(1)


def event(
    type_: str, t: float, *, conversation_id: str = CID, event_id: str | None = None, **data: Any
) -> Event:
    """A parsed event of `type_` at T0 + t; keyword arguments replace data keys
    (None removes one)."""
    merged = {**DEFAULT_DATA[type_], **data}
    merged = {key: value for key, value in merged.items() if value is not None}
    return parse_event(
        {
            "event_id": event_id or f"e{next(_event_ids)}",
            "type": type_,
            "conversation_id": conversation_id,
            "occurred_at": at(t),
            "data": merged,
        }
    )


Step = tuple[str, float, dict[str, Any]]

# The inbound life: created 0, enqueued 1, offered 2, accepted 5 (wait 5 s),
# customer hangup 65, wrap-up submitted 95 (handle 90 s).
INBOUND: list[Step] = [
    ("conversation.created", 0, {}),
    ("routing.enqueued", 1, {}),
    ("routing.offered", 2, {}),
    ("agent.accepted", 5, {}),
    ("media.hangup", 65, {"source": "customer"}),
    ("wrapup.submitted", 95, {}),
]
# The outbound call: initiated 0, ringing 1, answered 4.
OUTBOUND: list[Step] = [
    ("conversation.initiated", 0, {}),
    ("media.ringing", 1, {}),
    ("media.answered", 4, {}),
]

# Named starting points, each reached by applying real events from creation.
SOURCES: dict[str, list[Step]] = {
    "new": INBOUND[:1],
    "queued": INBOUND[:2],
    "offered": INBOUND[:3],
    "active": INBOUND[:4],
    "wrap_up": INBOUND[:5],
    "closed": INBOUND[:6],
    "dialing": OUTBOUND[:1],
    "ringing": OUTBOUND[:2],
    "active_outbound": OUTBOUND[:3],
    # active with agent a1, then transferred to agent a2 (offer o2): `offered`, and a
    # decline goes back to `active` with a1.
    "offered_by_transfer": [
        *INBOUND[:4],
        (
            "routing.transferred",
            6,
            {"team": None, "agent_id": "a2", "offer_id": "o2", "expires_at": at(36)},
        ),
    ],
    # closed by the wrap-up timer: no disposition yet.
    "closed_by_timeout": [*INBOUND[:5], ("wrapup.timeout", 95, {})],
}

# The canonical conversation of every status (inbound except dialing and ringing).
SOURCE_OF_STATUS: dict[Status, str] = {
    S.NEW: "new",
    S.QUEUED: "queued",
    S.OFFERED: "offered",
    S.DIALING: "dialing",
    S.RINGING: "ringing",
    S.ACTIVE: "active",
    S.WRAP_UP: "wrap_up",
    S.CLOSED: "closed",
}


def run(steps: list[Step], conversation: Conversation | None = None) -> Conversation:
    """Apply the steps in order (each must apply) and return the conversation."""
    for type_, t, data in steps:
        conversation = apply(conversation, event(type_, t, **data)).conversation
    assert conversation is not None
    return conversation


def conversation_in(source: str) -> Conversation:
    return run(SOURCES[source])


_ALL = frozenset(S)
_NOT_CLOSED = _ALL - {S.CLOSED}

# docs/domain.md: the statuses each event type has a row from (creating events: none).
# wrapup.submitted from `closed` needs "no disposition yet": the canonical closed
# conversation has one, so there it is invalid.
ROWS_FROM: dict[str, frozenset[Status]] = {
    "conversation.created": frozenset(),
    "conversation.initiated": frozenset(),
    "routing.out_of_hours": frozenset({S.NEW}),
    "routing.enqueued": frozenset({S.NEW}),
    "routing.enqueue_failed": frozenset({S.NEW}),
    "routing.assignment_failed": frozenset({S.NEW, S.QUEUED}),
    "routing.offered": frozenset({S.NEW, S.QUEUED}),
    "routing.offer_declined": frozenset({S.OFFERED}),
    "agent.accepted": frozenset({S.OFFERED}),
    "routing.queue_timeout": frozenset({S.QUEUED, S.OFFERED}),
    "routing.transferred": frozenset({S.ACTIVE, S.QUEUED, S.OFFERED}),
    "media.customer_dropped": frozenset({S.NEW, S.QUEUED, S.OFFERED}),
    "media.ringing": frozenset({S.DIALING}),
    "media.answered": frozenset({S.DIALING, S.RINGING}),
    "media.no_answer": frozenset({S.DIALING, S.RINGING}),
    "media.message": _NOT_CLOSED,
    "media.message_status": _ALL,
    "media.channel_added": _NOT_CLOSED,
    # source customer or system from new/queued/offered; any source from the others
    "media.hangup": frozenset({S.NEW, S.QUEUED, S.OFFERED, S.DIALING, S.RINGING, S.ACTIVE}),
    "media.recording_ready": _ALL,
    "wrapup.submitted": frozenset({S.WRAP_UP}),
    "wrapup.timeout": frozenset({S.WRAP_UP}),
    "csat.received": frozenset({S.WRAP_UP, S.CLOSED}),
    "ticket.linked": _ALL,
}


NO_OFFER: dict[str, Any] = {
    "offer_id": None,
    "offer_agent_id": None,
    "offer_expires_at": None,
    "offer_fallback": None,
}


def field_names() -> list[str]:
    return [field.name for field in dataclasses.fields(Conversation)]


HANDLE_BOOKKEEPING = frozenset({"handled_s", "handling_since"})


def assert_applied(
    before: Conversation,
    applied: Applied,
    *,
    to: Status,
    sets: dict[str, Any] | None = None,
    effects: tuple = (),
) -> Conversation:
    """The event applied: status `to`, version + 1, exactly the columns in `sets`
    changed to those values (every other column kept), and exactly `effects`."""
    after = applied.conversation
    assert isinstance(applied, Applied)
    assert after.status is to
    assert after.version == before.version + 1
    expected = {
        "status": to,
        "version": before.version + 1,
        "last_occurred_at": max(before.last_occurred_at, after.last_occurred_at),
        **(sets or {}),
    }
    unknown = set(expected) - set(field_names())
    assert not unknown, f"not a Conversation field: {unknown}"
    # handled_s and handling_since are handle_s in the making, checked through
    # handle_s by the walks; every other column must change only as the row says.
    changed = {
        name: getattr(after, name)
        for name in field_names()
        if getattr(after, name) != getattr(before, name) and name not in HANDLE_BOOKKEEPING
    }
    expected_changed = {
        name: value for name, value in expected.items() if getattr(before, name) != value
    }
    assert changed == expected_changed
    assert applied.effects == effects
    return after


def names_status_and_event(message: str, status: Status | str, event_type: str) -> bool:
    return bool(re.search(rf"\b{re.escape(str(status))}\b", message)) and event_type in message


def apply_stale(conversation: Conversation, ev: Event) -> Stale:
    try:
        apply(conversation, ev)
    except Stale as error:
        return error
    except Rejected as error:
        raise AssertionError(f"expected stale, got rejected {error.code}: {error}") from None
    raise AssertionError(f"expected stale, but {ev.type} applied")


def apply_rejected(conversation: Conversation | None, ev: Event, code: str) -> Rejected:
    try:
        apply(conversation, ev)
    except Rejected as error:
        assert error.code == code, error.message
        return error
    except Stale as error:
        raise AssertionError(f"expected rejected {code}, got stale: {error}") from None
    raise AssertionError(f"expected rejected {code}, but {ev.type} applied")
