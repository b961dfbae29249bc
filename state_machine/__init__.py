"""The conversation state machine: pure, standard library only.

    applied = apply(conversation_or_none, parse_event(envelope))

`apply` returns the new conversation and the effects the server must record, or
raises `Stale` or `Rejected` naming the status and the event.
"""

from .conversation import (
    ANSWERED_STATES,
    ENDED_STATUSES,
    HANDLING_STATUSES,
    HOLDING_STATUSES,
    ROUTABLE_STATUSES,
    UNANSWERED_STATES,
    UNROUTED_STATUSES,
    WAITING_STATUSES,
    Conversation,
    MessageStatusChanged,
    OfferEnded,
    OfferStarted,
    RecordingAdded,
    State,
    Status,
    TicketLinked,
    TranscriptAppended,
)
from .events import EVENT_TYPES, Customer, Event, InvalidEvent, in_bounds, parse_event
from .machine import Applied, Rejected, Stale, TransitionError, apply

__all__ = [
    "ANSWERED_STATES",
    "ENDED_STATUSES",
    "EVENT_TYPES",
    "HANDLING_STATUSES",
    "HOLDING_STATUSES",
    "ROUTABLE_STATUSES",
    "UNANSWERED_STATES",
    "UNROUTED_STATUSES",
    "WAITING_STATUSES",
    "Applied",
    "Conversation",
    "Customer",
    "Event",
    "InvalidEvent",
    "MessageStatusChanged",
    "OfferEnded",
    "OfferStarted",
    "RecordingAdded",
    "Rejected",
    "Stale",
    "State",
    "Status",
    "TicketLinked",
    "TranscriptAppended",
    "TransitionError",
    "apply",
    "in_bounds",
    "parse_event",
]
