"""apply(conversation, event): run the table and the four rules over it.

Pure: no I/O and no clock; time comes in on the event.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .conversation import ENDED_STATUSES, Conversation, OfferEnded, Status, seconds_between
from .events import Event
from .table import CREATING, FALLBACK, HANDLING, OFFER_ANSWERS, REPEATS_THE_PAST, SAME, TABLE, Row

_ROWS_BY_EVENT: dict[str, tuple[Row, ...]] = {}
for _row in TABLE:
    _ROWS_BY_EVENT[_row.event] = (*_ROWS_BY_EVENT.get(_row.event, ()), _row)


class TransitionError(Exception):
    """The event does not apply. `code` is the wire code, `message` names the status
    and the event."""

    outcome = "rejected"

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Rejected(TransitionError):
    outcome = "rejected"


class Stale(TransitionError):
    outcome = "stale"

    def __init__(self, message: str):
        super().__init__("stale", message)


@dataclass(frozen=True)
class Applied:
    conversation: Conversation
    effects: tuple
    row: Row


def apply(conversation: Conversation | None, event: Event) -> Applied:
    """Apply one event. Returns the new conversation (version + 1) and its effects, or
    raises Stale or Rejected; the conversation given is never changed."""
    if conversation is None:
        if event.type not in CREATING:
            raise Rejected(
                "unknown_conversation",
                f"{event.type} names conversation {event.conversation_id!r}, which does not "
                "exist; it must first be created",
            )
        row = _ROWS_BY_EVENT[event.type][0]
        return _run(None, event, row)
    status = conversation.status
    if event.type in CREATING:
        raise Stale(
            f"{event.type} for conversation {conversation.id!r}, which already exists "
            f"(status '{status}')"
        )
    row = _match(conversation, event)
    if row is not None:
        return _run(conversation, event, row)
    if event.type in OFFER_ANSWERS:
        raise Stale(
            f"{event.type} about offer {getattr(event, 'offer_id', None)!r}, which is not the "
            f"current offer of the conversation (status '{status}', current offer "
            f"{conversation.offer_id!r})"
        )
    if _repeats_the_past(conversation, event):
        raise Stale(f"{event.type} repeats what already happened (status '{status}')")
    if event.occurred_at <= conversation.last_occurred_at:
        raise Stale(
            f"{event.type} is not valid in status '{status}' and is older than the "
            "conversation's latest event"
        )
    raise Rejected("invalid_transition", f"{event.type} is not valid in status '{status}'")


def _match(conversation: Conversation, event: Event) -> Row | None:
    for row in _ROWS_BY_EVENT.get(event.type, ()):
        if row.sources is None or conversation.status not in row.sources:
            continue
        if row.guard is None or row.guard(conversation, event):
            return row
    return None


def _repeats_the_past(conversation: Conversation, event: Event) -> bool:
    statuses = REPEATS_THE_PAST[conversation.direction].get(event.type, frozenset())
    return conversation.status in statuses


def _run(conversation: Conversation | None, event: Event, row: Row) -> Applied:
    changes, effects = row.sets(conversation, event)
    at = event.occurred_at
    if conversation is None:
        new = Conversation(
            id=event.conversation_id,
            version=1,
            status=row.to,
            created_at=at,
            last_occurred_at=at,
            **changes,
        )
        return Applied(new, tuple(effects), row)

    if conversation.state is not None:
        changes.pop("state", None)  # the outcome is written once
    if row.to == SAME:
        status = conversation.status
    elif row.to == FALLBACK:
        status = conversation.offer_fallback or Status.QUEUED
    else:
        status = row.to
    changes["status"] = status
    changes["version"] = conversation.version + 1
    changes["last_occurred_at"] = max(conversation.last_occurred_at, at)

    ending = status in ENDED_STATUSES and conversation.status != status
    if ending:
        answered_at = changes.get("answered_at", conversation.answered_at)
        if answered_at is None and conversation.wait_s is None:
            changes["wait_s"] = seconds_between(conversation.created_at, at)
        if conversation.ended_at is None:
            changes["ended_at"] = at
    changes.update(_handling(conversation, status, at))
    if status == Status.CLOSED and conversation.status != Status.CLOSED:
        changes["closed_at"] = at
        changes["handle_s"] = changes.get("handled_s", conversation.handled_s)

    # An offer replaced or left behind by anything but its own answer is cancelled.
    new_offer_id = changes.get("offer_id", conversation.offer_id)
    if status != Status.OFFERED:
        new_offer_id = None
        changes.update(
            offer_id=None, offer_agent_id=None, offer_expires_at=None, offer_fallback=None
        )
    if conversation.offer_id is not None and new_offer_id != conversation.offer_id:
        if not any(isinstance(effect, OfferEnded) for effect in effects):
            effects = (
                OfferEnded(conversation.offer_id, conversation.offer_agent_id, "cancelled"),
                *effects,
            )

    return Applied(_replace(conversation, changes), tuple(effects), row)


_FIELDS = frozenset(field.name for field in dataclasses.fields(Conversation))


def _replace(conversation: Conversation, changes: dict) -> Conversation:
    """dataclasses.replace without its per-call field walk and __init__ (the hot path
    of ingest): a copy of the frozen instance's attributes with `changes` laid over."""
    if not _FIELDS.issuperset(changes):
        raise TypeError(f"not fields of Conversation: {sorted(set(changes) - _FIELDS)}")
    new = object.__new__(Conversation)
    vars(new).update(vars(conversation), **changes)
    return new


def _handling(conversation: Conversation, status: Status, at) -> dict:
    """Accumulate the time spent active or in wrap-up (handle_s), across transfers."""
    was, now = conversation.status in HANDLING, status in HANDLING
    if was and not now:
        spent = seconds_between(conversation.handling_since, at)
        return {
            "handled_s": round((conversation.handled_s or 0.0) + spent, 3),
            "handling_since": None,
        }
    if now and not was:
        return {"handling_since": at}
    return {}
