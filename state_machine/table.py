"""The transition table, as data: the one place a transition rule lives.

Each row names the event type, the statuses it applies from, an optional guard that
tells rows of one event apart, the status it leads to, and what it sets. The setters
above the table are small functions returning the columns they change and the effects
the server must record; the machine (machine.py) runs the rows and the four rules
over the table. A transition rule lives here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import events as ev
from .conversation import (
    ENDED_STATUSES,
    HANDLING_STATUSES,
    ROUTABLE_STATUSES,
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
    seconds_between,
)

Changes = tuple[dict[str, Any], tuple]
Setter = Callable[[Conversation | None, Any], Changes]
Guard = Callable[[Conversation, Any], bool]

S = Status
NOT_CLOSED = frozenset(Status) - {S.CLOSED}
ANY = frozenset(Status)
ROUTABLE = ROUTABLE_STATUSES
WAITING = WAITING_STATUSES
UNROUTED = UNROUTED_STATUSES
SAME = "same"  # the row keeps the status
FALLBACK = "fallback"  # a declined offer goes back where it came from (offer_fallback)


@dataclass(frozen=True)
class Row:
    event: str
    sources: frozenset[Status] | None  # None: the event creates the conversation
    to: Status | str
    sets: Setter
    guard: Guard | None = None

    def __post_init__(self):
        if self.sources is not None:
            object.__setattr__(self, "sources", frozenset(self.sources))


def nothing(c, e) -> Changes:
    return {}, ()


# --- setters -------------------------------------------------------------------------


def created(c, e: ev.ConversationCreated) -> Changes:
    return {
        "direction": "incoming",
        "channel": e.channel,
        "channels": (e.channel,),
        "contact": e.contact,
        "contacto_number": e.contacto_number,
        "team": e.team,
        **_customer(e.customer),
    }, ()


def initiated(c, e: ev.ConversationInitiated) -> Changes:
    effects = ()
    if e.text is not None:
        effects = (TranscriptAppended(e.event_id, "agent", e.text, e.occurred_at),)
    return {
        "direction": "outgoing",
        "agent_id": e.agent_id,
        "channel": e.channel,
        "channels": (e.channel,),
        "contact": e.contact,
        "contacto_number": e.contacto_number,
        **_customer(e.customer),
    }, effects


def _customer(customer: ev.Customer | None) -> dict[str, Any]:
    if customer is None:
        return {}
    return {
        "customer_id": customer.id,
        "customer_name": customer.name,
        "customer_email": customer.email,
        "customer_phone": customer.phone,
    }


def state(value: State, **also) -> Setter:
    def setter(c, e) -> Changes:
        return {"state": value, **also}, ()

    return setter


def state_with_team(value: State) -> Setter:
    def setter(c, e) -> Changes:
        return {"state": value, "team": e.team}, ()

    return setter


def enqueued(c, e: ev.Enqueued) -> Changes:
    return {"team": e.team, "queued_at": e.occurred_at}, ()


def offered(c: Conversation, e: ev.Offered) -> Changes:
    return _offer(e.offer_id, e.agent_id, e.expires_at, S.QUEUED)


def _offer(offer_id, agent_id, expires_at, fallback: Status) -> Changes:
    return {
        "offer_id": offer_id,
        "offer_agent_id": agent_id,
        "offer_expires_at": expires_at,
        "offer_fallback": fallback,
    }, (OfferStarted(offer_id, agent_id, expires_at),)


_NO_OFFER = {
    "offer_id": None,
    "offer_agent_id": None,
    "offer_expires_at": None,
    "offer_fallback": None,
}


def declined(c: Conversation, e: ev.OfferDeclined) -> Changes:
    return dict(_NO_OFFER), (OfferEnded(c.offer_id, c.offer_agent_id, e.reason),)


def accepted(c: Conversation, e: ev.Accepted) -> Changes:
    return {
        **_NO_OFFER,
        "agent_id": e.agent_id,
        **_answered(c, e),
    }, (OfferEnded(c.offer_id, c.offer_agent_id, "accepted"),)


def answered(c: Conversation, e) -> Changes:
    return _answered(c, e), ()


def customer_replied(c: Conversation, e: ev.Message) -> Changes:
    return _answered(c, e), message(c, e)[1]


def _answered(c: Conversation, e) -> dict[str, Any]:
    if c.answered_at is not None:  # answered before: a transfer's wait is not added
        return {"state": State.CUSTOMER_ANSWERED}
    return {
        "state": State.CUSTOMER_ANSWERED,
        "answered_at": e.occurred_at,
        "wait_s": seconds_between(c.created_at, e.occurred_at),
    }


def dropped(c, e) -> Changes:
    return {"state": State.DROPPED, "hangup_source": "customer"}, ()


def transferred_to_team(c: Conversation, e: ev.Transferred) -> Changes:
    return {**_NO_OFFER, "team": e.team, "queued_at": e.occurred_at}, ()


def transferred_to_agent(c: Conversation, e: ev.Transferred) -> Changes:
    # A transfer made while active (or while such a transfer is still pending) keeps
    # its way back to the agent who has the customer.
    fallback = S.ACTIVE if S.ACTIVE in (c.status, c.offer_fallback) else S.QUEUED
    return _offer(e.offer_id, e.agent_id, e.expires_at, fallback)


def no_answer(c, e: ev.NoAnswer) -> Changes:
    if e.reason == "failed":  # a provider fault is not the customer's
        return {"hangup_source": "system"}, ()
    return {"state": State.CUSTOMER_DID_NOT_RESPOND}, ()


def outbound_hangup(c, e: ev.Hangup) -> Changes:
    return {"state": State.CUSTOMER_DID_NOT_RESPOND, "hangup_source": e.source}, ()


def hangup(c, e: ev.Hangup) -> Changes:
    return {"hangup_source": e.source}, ()


def wrapup(c, e: ev.WrapupSubmitted) -> Changes:
    return {"disposition": e.disposition, "wrap_up_note": e.note}, ()


def message(c, e: ev.Message) -> Changes:
    return {}, (TranscriptAppended(e.message_id, e.sender, e.text, e.occurred_at),)


def message_status(c, e: ev.MessageStatus) -> Changes:
    return {}, (MessageStatusChanged(e.message_id, e.status),)


def channel_added(c: Conversation, e: ev.ChannelAdded) -> Changes:
    channels = c.channels if e.channel in c.channels else (*c.channels, e.channel)
    return {"channels": channels, "channel": "omnichannel" if len(channels) > 1 else c.channel}, ()


def ticket_linked(c, e: ev.TicketLinked) -> Changes:
    return {"ticket_id": e.ticket_id}, (TicketLinked(e.ticket_id, e.system, e.url),)


def csat(c, e: ev.CsatReceived) -> Changes:
    return {"csat": e.score}, ()


def recording_ready(c, e: ev.RecordingReady) -> Changes:
    return {"has_recording": True}, (RecordingAdded(e.recording_id, e.duration_s, e.content_type),)


# --- guards --------------------------------------------------------------------------


def current_offer(c: Conversation, e) -> bool:
    return e.offer_id == c.offer_id and e.agent_id == c.offer_agent_id


def from_customer(c, e) -> bool:
    return e.sender == "customer"


def source_is(source: str) -> Guard:
    return lambda c, e: e.source == source


def to_team(c, e: ev.Transferred) -> bool:
    return e.team is not None


def to_agent(c, e: ev.Transferred) -> bool:
    return e.agent_id is not None


def no_disposition(c: Conversation, e) -> bool:
    return c.disposition is None


# --- the table (first matching row wins) ---------------------------------------------

# fmt: off
TABLE: tuple[Row, ...] = (
    Row("conversation.created", None, S.NEW, created),
    Row("conversation.initiated", None, S.DIALING, initiated),
    Row("routing.out_of_hours", {S.NEW}, S.CLOSED, state_with_team(State.OUT_OF_BUSINESS_HOURS)),
    Row("routing.enqueued", {S.NEW}, S.QUEUED, enqueued),
    Row("routing.enqueue_failed", {S.NEW}, S.CLOSED, state_with_team(State.ENQUEUE_FAILED)),
    Row("routing.assignment_failed", ROUTABLE, S.CLOSED,
        state(State.AGENT_ASSIGNMENT_FAILED)),
    Row("routing.offered", ROUTABLE, S.OFFERED, offered),
    Row("routing.offer_declined", {S.OFFERED}, FALLBACK, declined, guard=current_offer),
    Row("agent.accepted", {S.OFFERED}, S.ACTIVE, accepted, guard=current_offer),
    Row("routing.queue_timeout", WAITING, S.CLOSED, state(State.QUEUE_TIMEOUT)),
    Row("media.customer_dropped", UNROUTED, S.CLOSED, dropped),
    Row("media.hangup", UNROUTED, S.CLOSED, dropped, guard=source_is("customer")),
    Row("media.hangup", UNROUTED, S.CLOSED, hangup, guard=source_is("system")),
    Row("routing.transferred", {S.ACTIVE, S.QUEUED, S.OFFERED}, S.QUEUED,
        transferred_to_team, guard=to_team),
    Row("routing.transferred", {S.ACTIVE, S.QUEUED, S.OFFERED}, S.OFFERED,
        transferred_to_agent, guard=to_agent),
    Row("media.ringing", {S.DIALING}, S.RINGING, nothing),
    Row("media.answered", {S.DIALING, S.RINGING}, S.ACTIVE, answered),
    Row("media.message", {S.DIALING}, S.ACTIVE, customer_replied, guard=from_customer),
    Row("media.no_answer", {S.DIALING, S.RINGING}, S.WRAP_UP, no_answer),
    Row("media.hangup", {S.DIALING, S.RINGING}, S.WRAP_UP, outbound_hangup),
    Row("media.hangup", {S.ACTIVE}, S.WRAP_UP, hangup),
    Row("wrapup.submitted", {S.WRAP_UP}, S.CLOSED, wrapup),
    Row("wrapup.submitted", {S.CLOSED}, SAME, wrapup, guard=no_disposition),
    Row("wrapup.timeout", {S.WRAP_UP}, S.CLOSED, nothing),
    Row("media.message", NOT_CLOSED, SAME, message),
    Row("media.message_status", ANY, SAME, message_status),
    Row("media.channel_added", NOT_CLOSED, SAME, channel_added),
    Row("ticket.linked", ANY, SAME, ticket_linked),
    Row("csat.received", {S.WRAP_UP, S.CLOSED}, SAME, csat),
    Row("media.recording_ready", ANY, SAME, recording_ready),
)

# Rule 3, "what repeats the past is stale": the statuses in which an event that fits
# no row reports something that already happened, on the conversation's own path (an
# incoming contact never rang; an outgoing one was never routed before its answer).
AFTER_NEW = frozenset({S.QUEUED, S.OFFERED, S.ACTIVE, S.WRAP_UP, S.CLOSED})
ANSWERED = frozenset({S.ACTIVE, S.WRAP_UP, S.CLOSED})
ENDED = ENDED_STATUSES
FINAL = frozenset({S.CLOSED})
REPEATS_THE_PAST: dict[str, dict[str, frozenset[Status]]] = {
    "incoming": {
        "routing.out_of_hours": AFTER_NEW,
        "routing.enqueued": AFTER_NEW,
        "routing.enqueue_failed": AFTER_NEW,
        "routing.assignment_failed": ANSWERED,
        "routing.offered": ANSWERED,
        "routing.queue_timeout": ANSWERED,
        "routing.transferred": ENDED,
        "media.customer_dropped": ENDED,
        "media.hangup": ENDED,
        "wrapup.submitted": FINAL,
        "wrapup.timeout": FINAL,
    },
    "outgoing": {
        "media.ringing": frozenset({S.RINGING}) | ANSWERED,
        "media.answered": ANSWERED,
        "media.no_answer": ENDED,
        "media.customer_dropped": ENDED,
        "media.hangup": ENDED,
        "routing.transferred": ENDED,
        "routing.queue_timeout": FINAL,
        "routing.assignment_failed": FINAL,
        "routing.offered": FINAL,
        "wrapup.submitted": FINAL,
        "wrapup.timeout": FINAL,
    },
}

# Time counted in handle_s: the agent with the customer, then doing its wrap-up.
HANDLING = HANDLING_STATUSES

# Events that answer an offer: one about another offer than the current is stale.
OFFER_ANSWERS = frozenset({"routing.offer_declined", "agent.accepted"})

CREATING = frozenset(row.event for row in TABLE if row.sources is None)
