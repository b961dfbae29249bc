"""The conversation as the machine sees it, the effects a transition asks for, and the
groups of statuses and states the server asks about (which are live, waiting, holding
an agent, answered...), so that no server module lists them itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class Status(StrEnum):
    NEW = "new"
    QUEUED = "queued"
    OFFERED = "offered"
    DIALING = "dialing"
    RINGING = "ringing"
    ACTIVE = "active"
    WRAP_UP = "wrap_up"
    CLOSED = "closed"


class State(StrEnum):
    CUSTOMER_ANSWERED = "customer_answered"
    DROPPED = "dropped"
    AGENT_ASSIGNMENT_FAILED = "agent_assignment_failed"
    CUSTOMER_DID_NOT_RESPOND = "customer_did_not_respond"
    ENQUEUE_FAILED = "enqueue_failed"
    OUT_OF_BUSINESS_HOURS = "out_of_business_hours"
    QUEUE_TIMEOUT = "queue_timeout"


# --- groups: what the server asks of a status or a state, answered here as data ------

ANSWERED_STATES = frozenset({State.CUSTOMER_ANSWERED})
UNANSWERED_STATES = frozenset(State) - ANSWERED_STATES

# Waiting for a routing decision: an arrival not routed yet, or queued for an agent.
ROUTABLE_STATUSES = frozenset({Status.NEW, Status.QUEUED})
# In a team's queue, waiting for an agent: queued, or offered to one. Counts in the
# queue's length and its waits; the queue's time-out runs in these.
WAITING_STATUSES = frozenset({Status.QUEUED, Status.OFFERED})
# Not connected to an agent yet: a customer who leaves now was dropped.
UNROUTED_STATUSES = ROUTABLE_STATUSES | WAITING_STATUSES
# The agent with the customer, then doing its wrap-up: handle time counts.
HANDLING_STATUSES = frozenset({Status.ACTIVE, Status.WRAP_UP})
# Keeping an agent busy: offered to it (`offer_agent_id`), or handled by it (`agent_id`).
HOLDING_STATUSES = frozenset({Status.OFFERED}) | HANDLING_STATUSES
# The contact is over (`ended_at` is set): in wrap-up, or closed.
ENDED_STATUSES = frozenset({Status.WRAP_UP, Status.CLOSED})


@dataclass(frozen=True, kw_only=True)
class Conversation:
    """Every column of a conversation plus what the machine needs to decide (the current
    offer, the greatest applied `occurred_at`)."""

    id: str
    version: int
    status: Status
    state: State | None = None
    direction: str
    channel: str
    channels: tuple[str, ...]
    contact: str
    contacto_number: str | None = None
    customer_id: str | None = None
    customer_name: str | None = None
    customer_email: str | None = None
    customer_phone: str | None = None
    team: str | None = None
    agent_id: str | None = None
    disposition: str | None = None
    wrap_up_note: str | None = None
    ticket_id: str | None = None
    csat: int | None = None
    hangup_source: str | None = None
    has_recording: bool = False
    created_at: datetime
    queued_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    closed_at: datetime | None = None
    wait_s: float | None = None
    handle_s: float | None = None
    # handle_s in the making: time active or in wrap-up so far, and since when now.
    handled_s: float | None = None
    handling_since: datetime | None = None
    last_occurred_at: datetime
    # The current offer: the agent sees a popup for it; it is not the row's agent yet.
    offer_id: str | None = None
    offer_agent_id: str | None = None
    offer_expires_at: datetime | None = None
    # Where a declined offer goes back to: `queued`, or `active` for a transfer to an
    # agent made while the conversation was active (it keeps its agent meanwhile).
    offer_fallback: Status | None = None


def seconds_between(start: datetime, end: datetime) -> float:
    """Seconds from start to end, never negative (late events may arrive out of order)."""
    return max(0.0, round((end - start).total_seconds(), 3))


# --- effects: what the server must record beside the row ----------------------------


@dataclass(frozen=True)
class TranscriptAppended:
    message_id: str
    sender: str
    text: str
    at: datetime


@dataclass(frozen=True)
class MessageStatusChanged:
    message_id: str
    status: str


@dataclass(frozen=True)
class TicketLinked:
    ticket_id: str
    system: str | None
    url: str | None


@dataclass(frozen=True)
class RecordingAdded:
    recording_id: str
    duration_s: float
    content_type: str


@dataclass(frozen=True)
class OfferEnded:
    """The current offer is over; `reason` is the popup_closed reason."""

    offer_id: str
    agent_id: str
    reason: str


@dataclass(frozen=True)
class OfferStarted:
    offer_id: str
    agent_id: str
    expires_at: datetime


Effect = (
    TranscriptAppended
    | MessageStatusChanged
    | TicketLinked
    | RecordingAdded
    | OfferEnded
    | OfferStarted
)
