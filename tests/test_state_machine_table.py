"""One test per row of docs/domain.md's transition table (one case per source status).

Each case starts from a conversation built by real events (machine_helpers.SOURCES),
applies the row's event at T0 + 200 s, and checks the new status, exactly the
columns the row sets (every other column must stay as it was), version + 1 and the
effects returned.

Source timelines (seconds): inbound created 0, enqueued 1 (team sales), offered 2
(a1/o1), accepted 5, hangup 65, wrap-up 95; outbound initiated 0, ringing 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from state_machine import (
    Conversation,
    MessageStatusChanged,
    OfferEnded,
    OfferStarted,
    RecordingAdded,
    State,
    Status,
    TicketLinked,
    TranscriptAppended,
    apply,
)
from tests.machine_helpers import (
    CID,
    NO_OFFER,
    SOURCE_OF_STATUS,
    assert_applied,
    at,
    conversation_in,
    event,
)

S = Status
T = 200  # when the row's event happens
CLOSED_AT_T = {"ended_at": at(T), "closed_at": at(T)}


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # a key of machine_helpers.SOURCES
    type: str
    to: Status
    data: dict[str, Any] = field(default_factory=dict)
    sets: dict[str, Any] = field(default_factory=dict)
    effects: tuple = ()


def cancelled(offer_id: str = "o1", agent_id: str = "a1") -> OfferEnded:
    return OfferEnded(offer_id, agent_id, "cancelled")


NOT_CLOSED = [s for s in S if s is not S.CLOSED]
TRANSFER_TO_A2 = {"team": None, "agent_id": "a2", "offer_id": "o2", "expires_at": at(T + 30)}
OFFER_O2 = {"offer_id": "o2", "offer_agent_id": "a2", "offer_expires_at": at(T + 30)}

# fmt: off
CASES: list[Case] = [
    # new -> routing.out_of_hours / routing.enqueue_failed -> closed
    Case("new-out_of_hours", "new", "routing.out_of_hours", S.CLOSED,
         sets={"state": State.OUT_OF_BUSINESS_HOURS, "team": "sales", **CLOSED_AT_T,
               "wait_s": 200.0}),
    Case("new-enqueued", "new", "routing.enqueued", S.QUEUED, data={"team": "support"},
         sets={"team": "support", "queued_at": at(T)}),
    Case("new-enqueue_failed", "new", "routing.enqueue_failed", S.CLOSED,
         sets={"state": State.ENQUEUE_FAILED, "team": "sales", **CLOSED_AT_T, "wait_s": 200.0}),
    # new, queued -> routing.assignment_failed -> closed
    *[
        Case(f"{source}-assignment_failed", source, "routing.assignment_failed", S.CLOSED,
             sets={"state": State.AGENT_ASSIGNMENT_FAILED, **CLOSED_AT_T, "wait_s": 200.0})
        for source in ("new", "queued")
    ],
    # new, queued -> routing.offered -> offered (the offer, not yet the row's agent)
    *[
        Case(f"{source}-offered", source, "routing.offered", S.OFFERED,
             data={"agent_id": "a2", "offer_id": "o2", "expires_at": at(T + 30)},
             sets={**OFFER_O2, "offer_fallback": S.QUEUED},
             effects=(OfferStarted("o2", "a2", at(T + 30)),))
        for source in ("new", "queued")
    ],
    # offered (current offer) -> routing.offer_declined -> queued, or back to active
    *[
        Case(f"offered-offer_declined-{reason}", "offered", "routing.offer_declined",
             S.QUEUED, data={"reason": reason}, sets=NO_OFFER,
             effects=(OfferEnded("o1", "a1", reason),))
        for reason in ("rejected", "expired")
    ],
    Case("offered_by_transfer-offer_declined", "offered_by_transfer",
         "routing.offer_declined", S.ACTIVE,
         data={"agent_id": "a2", "offer_id": "o2", "reason": "expired"}, sets=NO_OFFER,
         effects=(OfferEnded("o2", "a2", "expired"),)),
    # offered (current offer) -> agent.accepted -> active
    Case("offered-accepted", "offered", "agent.accepted", S.ACTIVE,
         sets={**NO_OFFER, "agent_id": "a1", "state": State.CUSTOMER_ANSWERED,
               "answered_at": at(T), "wait_s": 200.0},
         effects=(OfferEnded("o1", "a1", "accepted"),)),
    Case("offered_by_transfer-accepted", "offered_by_transfer", "agent.accepted", S.ACTIVE,
         data={"agent_id": "a2", "offer_id": "o2"},
         # answered before (at 5): answered_at, wait_s and state stay.
         sets={**NO_OFFER, "agent_id": "a2"},
         effects=(OfferEnded("o2", "a2", "accepted"),)),
    # queued, offered -> routing.queue_timeout -> closed
    Case("queued-queue_timeout", "queued", "routing.queue_timeout", S.CLOSED,
         sets={"state": State.QUEUE_TIMEOUT, **CLOSED_AT_T, "wait_s": 200.0}),
    Case("offered-queue_timeout", "offered", "routing.queue_timeout", S.CLOSED,
         sets={**NO_OFFER, "state": State.QUEUE_TIMEOUT, **CLOSED_AT_T, "wait_s": 200.0},
         effects=(cancelled(),)),
    # new, queued, offered -> customer_dropped / hangup(customer) / hangup(system) -> closed
    *[
        Case(f"{source}-{name}", source, type_, S.CLOSED, data=data,
             sets={**(NO_OFFER if source == "offered" else {}), **CLOSED_AT_T,
                   "wait_s": 200.0, **sets},
             effects=(cancelled(),) if source == "offered" else ())
        for source in ("new", "queued", "offered")
        for name, type_, data, sets in (
            ("customer_dropped", "media.customer_dropped", {},
             {"state": State.DROPPED, "hangup_source": "customer"}),
            ("hangup-customer", "media.hangup", {"source": "customer"},
             {"state": State.DROPPED, "hangup_source": "customer"}),
            ("hangup-system", "media.hangup", {"source": "system"},
             {"hangup_source": "system"}),  # state stays empty
        )
    ],
    # active, queued, offered -> routing.transferred -> queued (team) / offered (agent)
    *[
        Case(f"{source}-transferred-team", source, "routing.transferred", S.QUEUED,
             data={"team": "billing"},
             sets={**(NO_OFFER if source == "offered" else {}), "team": "billing",
                   "queued_at": at(T)},
             effects=(cancelled(),) if source == "offered" else ())
        for source in ("active", "queued", "offered")
    ],
    Case("active-transferred-agent", "active", "routing.transferred", S.OFFERED,
         data=TRANSFER_TO_A2, sets={**OFFER_O2, "offer_fallback": S.ACTIVE},
         effects=(OfferStarted("o2", "a2", at(T + 30)),)),
    Case("queued-transferred-agent", "queued", "routing.transferred", S.OFFERED,
         data=TRANSFER_TO_A2, sets={**OFFER_O2, "offer_fallback": S.QUEUED},
         effects=(OfferStarted("o2", "a2", at(T + 30)),)),
    Case("offered-transferred-agent", "offered", "routing.transferred", S.OFFERED,
         data=TRANSFER_TO_A2, sets=OFFER_O2,  # fallback stays queued
         effects=(cancelled(), OfferStarted("o2", "a2", at(T + 30)))),
    # outbound
    Case("dialing-ringing", "dialing", "media.ringing", S.RINGING),
    *[
        Case(f"{source}-answered", source, "media.answered", S.ACTIVE,
             sets={"state": State.CUSTOMER_ANSWERED, "answered_at": at(T), "wait_s": 200.0})
        for source in ("dialing", "ringing")
    ],
    Case("dialing-message-customer", "dialing", "media.message", S.ACTIVE,
         data={"message_id": "m9", "sender": "customer", "text": "yes, call me"},
         sets={"state": State.CUSTOMER_ANSWERED, "answered_at": at(T), "wait_s": 200.0},
         effects=(TranscriptAppended("m9", "customer", "yes, call me", at(T)),)),
    *[
        Case(f"{source}-no_answer-{reason}", source, "media.no_answer", S.WRAP_UP,
             data={"reason": reason},
             sets={"ended_at": at(T), "wait_s": 200.0,
                   **({"hangup_source": "system"} if reason == "failed"
                      else {"state": State.CUSTOMER_DID_NOT_RESPOND})})
        for source in ("dialing", "ringing")
        for reason in ("no_answer", "busy", "no_reply", "failed")
    ],
    *[
        Case(f"{source}-hangup-{who}", source, "media.hangup", S.WRAP_UP,
             data={"source": who},
             sets={"state": State.CUSTOMER_DID_NOT_RESPOND, "hangup_source": who,
                   "ended_at": at(T), "wait_s": 200.0})
        for source in ("dialing", "ringing")
        for who in ("customer", "agent", "system")
    ],
    *[
        Case(f"active-hangup-{who}", "active", "media.hangup", S.WRAP_UP,
             data={"source": who}, sets={"hangup_source": who, "ended_at": at(T)})
        for who in ("customer", "agent", "system")
    ],
    # wrap-up
    Case("wrap_up-wrapup_submitted", "wrap_up", "wrapup.submitted", S.CLOSED,
         data={"disposition": "sale", "note": "upsold"},
         sets={"disposition": "sale", "wrap_up_note": "upsold", "closed_at": at(T),
               "handle_s": 195.0}),  # answered at 5, closed at 200
    Case("wrap_up-wrapup_submitted-no-note", "wrap_up", "wrapup.submitted", S.CLOSED,
         data={"disposition": "sale", "note": None},
         sets={"disposition": "sale", "closed_at": at(T), "handle_s": 195.0}),
    Case("closed_without_disposition-wrapup_submitted", "closed_by_timeout",
         "wrapup.submitted", S.CLOSED, data={"disposition": "late", "note": "after timeout"},
         sets={"disposition": "late", "wrap_up_note": "after timeout"}),
    Case("wrap_up-wrapup_timeout", "wrap_up", "wrapup.timeout", S.CLOSED,
         sets={"closed_at": at(T), "handle_s": 195.0}),
    # same-status rows
    *[
        Case(f"{status}-message", SOURCE_OF_STATUS[status], "media.message", status,
             # from dialing a customer's message answers (row above); the agent's does not
             data={"sender": "agent" if status is S.DIALING else "customer"},
             effects=(TranscriptAppended(
                 "m1", "agent" if status is S.DIALING else "customer", "hello", at(T)),))
        for status in NOT_CLOSED
    ],
    *[
        Case(f"{status}-message_status", SOURCE_OF_STATUS[status], "media.message_status",
             status, data={"status": "read"}, effects=(MessageStatusChanged("m1", "read"),))
        for status in S
    ],
    *[
        Case(f"{status}-channel_added", SOURCE_OF_STATUS[status], "media.channel_added",
             status, data={"channel": "whatsapp"},
             sets={"channel": "omnichannel", "channels": ("call", "whatsapp")})
        for status in NOT_CLOSED
    ],
    *[
        Case(f"{status}-ticket_linked", SOURCE_OF_STATUS[status], "ticket.linked", status,
             data={"ticket_id": "T-9"}, sets={"ticket_id": "T-9"},
             effects=(TicketLinked("T-9", "zendesk", "https://t.example/1"),))
        for status in S
    ],
    *[
        Case(f"{status}-csat", SOURCE_OF_STATUS[status], "csat.received", status,
             data={"score": 2}, sets={"csat": 2})
        for status in (S.WRAP_UP, S.CLOSED)
    ],
    *[
        Case(f"{status}-recording_ready", SOURCE_OF_STATUS[status], "media.recording_ready",
             status, sets={"has_recording": True},
             effects=(RecordingAdded("r1", 61.5, "audio/mpeg"),))
        for status in S
    ],
]
# fmt: on


# --- tests ---------------------------------------------------------------------------


def test_cases_have_unique_names():
    names = [case.name for case in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_row(case: Case):
    before = conversation_in(case.source)
    applied = apply(before, event(case.type, T, **case.data))
    after = assert_applied(before, applied, to=case.to, sets=case.sets, effects=case.effects)
    assert after.last_occurred_at == at(T)


def test_row_conversation_created():
    ev = event(
        "conversation.created",
        T,
        channel="chat",
        contact="visitor-9",
        contacto_number=None,
        customer={"name": "Bo Chan", "id": "c-2", "email": "bo@example.com", "phone": "+4470"},
        team="sales",
    )
    applied = apply(None, ev)
    assert applied.conversation == Conversation(
        id=CID,
        version=1,
        status=S.NEW,
        direction="incoming",
        channel="chat",
        channels=("chat",),
        contact="visitor-9",
        customer_id="c-2",
        customer_name="Bo Chan",
        customer_email="bo@example.com",
        customer_phone="+4470",
        team="sales",
        created_at=at(T),
        last_occurred_at=at(T),
    )
    assert applied.conversation.status is S.NEW
    assert applied.effects == ()


def test_row_conversation_created_minimal():
    ev = event("conversation.created", T, customer={"name": "Ann"}, contacto_number="+15559000")
    conversation = apply(None, ev).conversation
    assert (conversation.status, conversation.direction, conversation.team) == (
        S.NEW,
        "incoming",
        None,
    )
    assert (conversation.customer_name, conversation.customer_id) == ("Ann", None)
    assert conversation.contacto_number == "+15559000"
    assert (conversation.channel, conversation.channels) == ("call", ("call",))
    assert conversation.state is None and conversation.agent_id is None


def test_row_conversation_initiated_with_first_message():
    ev = event(
        "conversation.initiated",
        T,
        event_id="ev-init",
        channel="sms",
        agent_id="a7",
        customer={"name": "Cy"},
        text="Your order shipped",
    )
    applied = apply(None, ev)
    assert applied.conversation == Conversation(
        id=CID,
        version=1,
        status=S.DIALING,
        direction="outgoing",
        agent_id="a7",
        channel="sms",
        channels=("sms",),
        contact="+15550100",
        contacto_number="+15559000",
        customer_name="Cy",
        created_at=at(T),
        last_occurred_at=at(T),
    )
    assert applied.conversation.status is S.DIALING
    assert applied.effects == (TranscriptAppended("ev-init", "agent", "Your order shipped", at(T)),)


def test_row_conversation_initiated_call_without_text():
    applied = apply(None, event("conversation.initiated", T))
    conversation = applied.conversation
    assert conversation.status is S.DIALING
    assert (conversation.direction, conversation.agent_id, conversation.team) == (
        "outgoing",
        "a1",
        None,  # an outgoing conversation has a team only once transferred to one
    )
    assert conversation.customer_name is None
    assert applied.effects == ()


def test_channel_added_again_keeps_one_channel():
    before = conversation_in("active")
    applied = apply(before, event("media.channel_added", T, channel="call"))
    assert_applied(before, applied, to=S.ACTIVE)


def test_third_channel_is_appended():
    before = conversation_in("active")
    chat = apply(before, event("media.channel_added", T, channel="chat")).conversation
    applied = apply(chat, event("media.channel_added", T + 1, channel="sms"))
    assert_applied(chat, applied, to=S.ACTIVE, sets={"channels": ("call", "chat", "sms")})
    assert applied.conversation.channel == "omnichannel"


def test_ticket_linked_keeps_the_latest():
    before = conversation_in("closed")
    first = apply(before, event("ticket.linked", T, ticket_id="T-1")).conversation
    second = apply(first, event("ticket.linked", T + 1, ticket_id="T-2", system=None, url=None))
    assert_applied(
        first,
        second,
        to=S.CLOSED,
        sets={"ticket_id": "T-2"},
        effects=(TicketLinked("T-2", None, None),),
    )
