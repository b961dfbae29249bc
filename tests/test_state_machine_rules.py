"""The four rules under docs/domain.md's transition table, every invalid (status, event)
pair, and the end-to-end walks of the issue.

The expectations are written from docs/domain.md by hand (machine_helpers.ROWS_FROM and
REPEATS_THE_PAST below), not read from state_machine/table.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from state_machine import (
    EVENT_TYPES,
    Conversation,
    MessageStatusChanged,
    OfferEnded,
    OfferStarted,
    RecordingAdded,
    Rejected,
    Stale,
    State,
    Status,
    TranscriptAppended,
    apply,
)
from tests.machine_helpers import (
    NO_OFFER,
    ROWS_FROM,
    SOURCE_OF_STATUS,
    SOURCES,
    apply_rejected,
    apply_stale,
    assert_applied,
    at,
    conversation_in,
    event,
    names_status_and_event,
    run,
)

S = Status
CREATING = ("conversation.created", "conversation.initiated")
OFFER_ANSWERS = ("routing.offer_declined", "agent.accepted")

ROUTER_DECISIONS = frozenset(
    {
        "routing.out_of_hours",
        "routing.enqueued",
        "routing.enqueue_failed",
        "routing.assignment_failed",
        "routing.offered",
        "routing.queue_timeout",
        "routing.transferred",
    }
)

# Rule 3, what repeats the past: the invalid events that report, for the canonical
# conversation of each status (inbound, but dialing and ringing), something that has
# already happened on its own path. Router decisions once the conversation is past
# `new` (late routing of one already routed), the router's queue and offer decisions
# once it is answered, a customer leaving or a hangup once it has ended, a wrap-up
# once it is closed. An inbound call never rang or was answered by the media layer,
# and an outbound ringing call was never queued: those are late or invalid by
# occurred_at (rule 4). A new media.message on a closed conversation is new content,
# not a repeat: rule 4 as well.
_ROUTED = frozenset({"routing.out_of_hours", "routing.enqueued", "routing.enqueue_failed"})
_ANSWERED = _ROUTED | {"routing.assignment_failed", "routing.offered", "routing.queue_timeout"}
_ENDED = _ANSWERED | {"routing.transferred", "media.customer_dropped", "media.hangup"}
REPEATS_THE_PAST: dict[Status, frozenset[str]] = {
    S.NEW: frozenset(),
    S.QUEUED: _ROUTED,
    S.OFFERED: _ROUTED,
    S.DIALING: frozenset(),
    S.RINGING: frozenset({"media.ringing"}),
    S.ACTIVE: _ANSWERED,
    S.WRAP_UP: _ENDED,
    S.CLOSED: ROUTER_DECISIONS | _ENDED | {"wrapup.submitted", "wrapup.timeout"},
}


@dataclass(frozen=True)
class Pair:
    status: Status
    type: str
    data: dict[str, Any]

    @property
    def name(self) -> str:
        extra = "".join(f"-{value}" for value in self.data.values())
        return f"{self.status}-{self.type}{extra}"

    def stale_whatever_time(self) -> bool:
        return (
            self.type in CREATING  # conversation.created for an existing id
            or self.type in OFFER_ANSWERS  # rule 2: not the current offer (there is none)
            or self.type in REPEATS_THE_PAST[self.status]  # rule 3
        )


INVALID_PAIRS: list[Pair] = [
    *[
        Pair(status, type_, {})
        for status in S
        for type_ in sorted(EVENT_TYPES)
        if status not in ROWS_FROM[type_]
    ],
    # media.hangup by the agent has no row before the conversation is connected
    *[Pair(status, "media.hangup", {"source": "agent"}) for status in (S.NEW, S.QUEUED, S.OFFERED)],
]

# occurred_at of the invalid event relative to the conversation's latest event.
TIMINGS = {"newer": 10, "same": 0, "older": -10}


def latest_second(conversation: Conversation) -> float:
    return (conversation.last_occurred_at - at(0)).total_seconds()


def conversation_steps(source: str):
    return list(SOURCES[source])


class Walk:
    """Apply events one by one, checking each step with assert_applied (so every
    column not named in a step must be unchanged)."""

    def __init__(self, first, **expected: Any):
        self.conversation = apply(None, first).conversation
        for name, value in expected.items():
            assert getattr(self.conversation, name) == value, name

    @classmethod
    def from_conversation(cls, conversation: Conversation) -> Walk:
        walk = cls.__new__(cls)
        walk.conversation = conversation
        return walk

    def step(self, ev, to: Status, effects: tuple = (), **sets: Any) -> Conversation:
        self.conversation = assert_applied(
            self.conversation, apply(self.conversation, ev), to=to, sets=sets, effects=effects
        )
        return self.conversation


# --- the table's coverage of the event types -----------------------------------------


def test_rows_from_names_every_event_type():
    assert set(ROWS_FROM) == set(EVENT_TYPES)


# --- invalid pairs: stale or rejected, never anything else ---------------------------


@pytest.mark.parametrize("timing", TIMINGS)
@pytest.mark.parametrize("pair", INVALID_PAIRS, ids=lambda pair: pair.name)
def test_invalid_pair(pair: Pair, timing: str):
    before = conversation_in(SOURCE_OF_STATUS[pair.status])
    assert before.status is pair.status
    ev = event(pair.type, latest_second(before) + TIMINGS[timing], **pair.data)
    with pytest.raises((Stale, Rejected)) as caught:
        apply(before, ev)
    error = caught.value
    assert names_status_and_event(error.message, pair.status, pair.type), error.message
    if timing == "newer" and not pair.stale_whatever_time():
        assert type(error) is Rejected, f"expected rejected, got stale: {error.message}"
        assert error.code == "invalid_transition"
        assert error.outcome == "rejected"
    else:
        assert type(error) is Stale, f"expected stale, got rejected: {error.message}"
        assert error.outcome == "stale"


@pytest.mark.parametrize("type_", sorted(set(EVENT_TYPES) - set(CREATING)))
def test_event_on_unknown_conversation_is_rejected(type_: str):
    error = apply_rejected(None, event(type_, 0, conversation_id="nope"), "unknown_conversation")
    assert type_ in error.message and "nope" in error.message


@pytest.mark.parametrize("type_", CREATING)
def test_creating_event_for_an_existing_id_is_stale_whatever_its_time(type_: str):
    for source in ("new", "active", "closed", "dialing"):
        before = conversation_in(source)
        for t in (-5, 0, 1000):
            error = apply_stale(before, event(type_, t))
            assert names_status_and_event(error.message, before.status, type_)


# --- rule 1: `state` is written once --------------------------------------------------

ANSWERED_THEN_TRANSFERRED_TO_A_TEAM = [
    ("conversation.created", 0, {}),
    ("routing.enqueued", 1, {"team": "sales"}),
    ("routing.offered", 2, {}),
    ("agent.accepted", 5, {}),
    ("routing.transferred", 65, {"team": "billing"}),
]


def test_answered_transferred_to_a_team_then_queue_timeout_stays_customer_answered():
    """The issue's scenario."""
    queued = run(ANSWERED_THEN_TRANSFERRED_TO_A_TEAM)
    assert (queued.status, queued.state, queued.team) == (
        S.QUEUED,
        State.CUSTOMER_ANSWERED,
        "billing",
    )
    applied = apply(queued, event("routing.queue_timeout", 125))
    closed = applied.conversation
    assert closed.status is S.CLOSED
    assert closed.state is State.CUSTOMER_ANSWERED
    assert (closed.closed_at, closed.ended_at) == (at(125), at(125))
    assert (closed.answered_at, closed.wait_s) == (at(5), 5.0)
    assert closed.version == queued.version + 1


@pytest.mark.parametrize(
    ("type_", "data", "also"),
    [
        ("routing.queue_timeout", {}, {}),
        ("routing.assignment_failed", {}, {}),
        ("media.customer_dropped", {}, {"hangup_source": "customer"}),
        ("media.hangup", {"source": "customer"}, {"hangup_source": "customer"}),
    ],
)
def test_a_closing_row_after_an_answer_changes_all_but_state(type_, data, also):
    queued = run(ANSWERED_THEN_TRANSFERRED_TO_A_TEAM)
    closed = apply(queued, event(type_, 125, **data)).conversation
    assert (closed.status, closed.state) == (S.CLOSED, State.CUSTOMER_ANSWERED)
    assert closed.closed_at == at(125)
    for name, value in also.items():
        assert getattr(closed, name) == value


def test_state_is_kept_when_a_re_offer_after_a_transfer_times_out():
    reoffered = run(
        [
            *ANSWERED_THEN_TRANSFERRED_TO_A_TEAM,
            ("routing.offered", 70, {"agent_id": "a2", "offer_id": "o2"}),
        ]
    )
    closed = apply(reoffered, event("routing.queue_timeout", 100)).conversation
    assert (closed.status, closed.state) == (S.CLOSED, State.CUSTOMER_ANSWERED)


def test_unanswered_state_stays_through_wrap_up_and_close():
    """An outbound call the customer did not answer stays unanswered through wrap-up."""
    wrap_up = run([("conversation.initiated", 0, {}), ("media.no_answer", 30, {})])
    assert wrap_up.state is State.CUSTOMER_DID_NOT_RESPOND
    closed = apply(wrap_up, event("wrapup.submitted", 40)).conversation
    assert closed.state is State.CUSTOMER_DID_NOT_RESPOND
    apply_stale(closed, event("media.answered", 50))


# --- rule 2: offers are matched -------------------------------------------------------


@pytest.mark.parametrize("type_", OFFER_ANSWERS)
@pytest.mark.parametrize(
    "who",
    [
        {"agent_id": "a1", "offer_id": "o2"},  # another offer
        {"agent_id": "a2", "offer_id": "o1"},  # another agent
        {"agent_id": "a2", "offer_id": "o2"},
    ],
    ids=["other-offer", "other-agent", "both-other"],
)
@pytest.mark.parametrize("dt", [-1, 0, 100], ids=["older", "same", "newer"])
def test_answer_to_another_offer_is_stale(type_, who, dt):
    offered = conversation_in("offered")
    error = apply_stale(offered, event(type_, latest_second(offered) + dt, **who))
    assert names_status_and_event(error.message, S.OFFERED, type_)


def test_late_expiry_after_the_offer_was_accepted_is_stale():
    active = conversation_in("active")
    error = apply_stale(active, event("routing.offer_declined", 500, reason="expired"))
    assert names_status_and_event(error.message, S.ACTIVE, "routing.offer_declined")


def test_late_accept_of_a_declined_offer_is_stale():
    queued = run([*conversation_steps("offered"), ("routing.offer_declined", 10, {})])
    assert queued.status is S.QUEUED
    apply_stale(queued, event("agent.accepted", 500))


def test_answer_to_the_offer_replaced_by_a_transfer_is_stale():
    offered = conversation_in("offered")  # o1 to a1
    moved = apply(
        offered,
        event(
            "routing.transferred",
            10,
            team=None,
            agent_id="a2",
            offer_id="o2",
            expires_at=at(40),
        ),
    ).conversation
    apply_stale(moved, event("agent.accepted", 500))  # a1 / o1
    accepted = apply(moved, event("agent.accepted", 11, agent_id="a2", offer_id="o2"))
    assert accepted.conversation.agent_id == "a2"


def test_offer_after_close_expiring_is_stale():
    closed = run(
        [
            *conversation_steps("offered"),
            ("media.customer_dropped", 10, {}),
        ]
    )
    apply_stale(closed, event("routing.offer_declined", 33, reason="expired"))


# --- rule 3: what repeats the past is stale, whatever its time ------------------------


@pytest.mark.parametrize("dt", [-50, 0, 1000], ids=["older", "same", "newer"])
def test_second_hangup_after_the_conversation_ended_is_stale(dt):
    for source in ("wrap_up", "closed"):
        ended = conversation_in(source)
        for who in ("customer", "agent", "system"):
            error = apply_stale(ended, event("media.hangup", latest_second(ended) + dt, source=who))
            assert names_status_and_event(error.message, ended.status, "media.hangup")


@pytest.mark.parametrize("type_", sorted(ROUTER_DECISIONS))
def test_router_decision_about_a_closed_conversation_is_stale(type_):
    closed = conversation_in("closed")
    data = {"reason": "expired"} if type_ == "routing.offer_declined" else {}
    apply_stale(closed, event(type_, 10_000, **data))


@pytest.mark.parametrize("dt", [-50, 1000], ids=["older", "newer"])
def test_second_wrap_up_is_stale(dt):
    closed = conversation_in("closed")
    t = latest_second(closed) + dt
    apply_stale(closed, event("wrapup.submitted", t, disposition="other"))
    apply_stale(closed, event("wrapup.timeout", t))


# --- rule 4: late or invalid, by occurred_at -----------------------------------------


def test_invalid_and_newer_is_rejected_invalid_and_not_newer_is_stale():
    queued = conversation_in("queued")  # latest event at 1
    error = apply_rejected(queued, event("wrapup.timeout", 1.001), "invalid_transition")
    assert names_status_and_event(error.message, S.QUEUED, "wrapup.timeout")
    apply_stale(queued, event("wrapup.timeout", 1))
    apply_stale(queued, event("wrapup.timeout", 0.999))


def test_rule_4_uses_the_greatest_occurred_at_applied_not_the_last():
    active = conversation_in("active")  # latest event at 5
    later = apply(active, event("media.message", 50)).conversation
    earlier = apply(later, event("media.message", 20, message_id="m2")).conversation
    assert earlier.last_occurred_at == at(50)  # never decreases
    apply_stale(earlier, event("wrapup.timeout", 40))
    apply_rejected(earlier, event("wrapup.timeout", 51), "invalid_transition")


def test_a_valid_event_applies_whatever_its_time():
    active = conversation_in("active")
    applied = apply(active, event("media.message", -100))
    assert applied.conversation.version == active.version + 1
    assert applied.conversation.last_occurred_at == active.last_occurred_at


def test_rejected_event_judged_afresh_once_valid():
    """A rejected event changes nothing, so the same event can apply later."""
    dialing = conversation_in("dialing")
    answered = event("media.answered", 10)
    apply_rejected(None, answered, "unknown_conversation")
    assert apply(dialing, answered).conversation.status is S.ACTIVE


# --- walks of the issue ---------------------------------------------------------------


def test_walk_inbound_call_to_closed_by_wrap_up():
    walk = Walk(
        event("conversation.created", 0, team=None),
        status=S.NEW,
        direction="incoming",
        state=None,
        team=None,
        agent_id=None,
        wait_s=None,
        handle_s=None,
        version=1,
        created_at=at(0),
    )
    walk.step(
        event("routing.enqueued", 1.5, team="sales"), S.QUEUED, team="sales", queued_at=at(1.5)
    )
    walk.step(
        event("routing.offered", 3, agent_id="a1", offer_id="o1", expires_at=at(33)),
        S.OFFERED,
        effects=(OfferStarted("o1", "a1", at(33)),),
        offer_id="o1",
        offer_agent_id="a1",
        offer_expires_at=at(33),
        offer_fallback=S.QUEUED,
    )
    walk.step(
        event("agent.accepted", 8.25, agent_id="a1", offer_id="o1"),
        S.ACTIVE,
        effects=(OfferEnded("o1", "a1", "accepted"),),
        **NO_OFFER,
        agent_id="a1",
        state=State.CUSTOMER_ANSWERED,
        answered_at=at(8.25),
        wait_s=8.25,
    )
    walk.step(
        event("media.hangup", 68.25, source="customer"),
        S.WRAP_UP,
        hangup_source="customer",
        ended_at=at(68.25),
    )
    end = walk.step(
        event("wrapup.submitted", 98.5, disposition="resolved", note="refund"),
        S.CLOSED,
        disposition="resolved",
        wrap_up_note="refund",
        closed_at=at(98.5),
        handle_s=90.25,  # active 60 + wrap-up 30.25
    )
    assert end.version == 6
    assert (end.state, end.wait_s, end.agent_id, end.team) == (
        State.CUSTOMER_ANSWERED,
        8.25,
        "a1",
        "sales",
    )


def outbound_call_to_wrap_up() -> Walk:
    walk = Walk(
        event("conversation.initiated", 0, agent_id="a1"),
        status=S.DIALING,
        direction="outgoing",
        agent_id="a1",
        team=None,
        state=None,
        version=1,
    )
    walk.step(event("media.ringing", 2), S.RINGING)
    walk.step(
        event("media.answered", 7),
        S.ACTIVE,
        state=State.CUSTOMER_ANSWERED,
        answered_at=at(7),
        wait_s=7.0,
    )
    walk.step(
        event("media.hangup", 67, source="agent"), S.WRAP_UP, hangup_source="agent", ended_at=at(67)
    )
    return walk


def test_walk_outbound_call_closed_by_wrapup_submitted():
    walk = outbound_call_to_wrap_up()
    end = walk.step(
        event("wrapup.submitted", 100, disposition="callback", note=None),
        S.CLOSED,
        disposition="callback",
        closed_at=at(100),
        handle_s=93.0,
    )
    assert (end.version, end.team, end.wrap_up_note) == (5, None, None)


def test_walk_outbound_call_closed_by_wrapup_timeout_then_late_wrap_up():
    walk = outbound_call_to_wrap_up()
    closed = walk.step(event("wrapup.timeout", 127), S.CLOSED, closed_at=at(127), handle_s=120.0)
    assert closed.disposition is None
    # the late wrap-up after the timeout: same status, only disposition and note
    late = walk.step(
        event("wrapup.submitted", 140, disposition="sale", note="late"),
        S.CLOSED,
        disposition="sale",
        wrap_up_note="late",
    )
    assert (late.closed_at, late.handle_s, late.version) == (at(127), 120.0, 6)
    # and a second one repeats the past
    apply_stale(late, event("wrapup.submitted", 150, disposition="other"))
    apply_stale(late, event("wrapup.submitted", 130, disposition="other"))


def test_walk_late_wrap_up_arriving_with_an_older_time_still_applies():
    walk = outbound_call_to_wrap_up()
    walk.step(event("wrapup.timeout", 127), S.CLOSED, closed_at=at(127), handle_s=120.0)
    walk.step(
        event("wrapup.submitted", 120, disposition="sale"),  # submitted before the timer
        S.CLOSED,
        disposition="sale",
        wrap_up_note="refund issued",
    )


def test_walk_transfer_to_an_agent_declined_returns_to_active_with_its_agent():
    walk = Walk(event("conversation.created", 0))
    walk.step(event("routing.enqueued", 1), S.QUEUED, team="sales", queued_at=at(1))
    walk.step(
        event("routing.offered", 2),
        S.OFFERED,
        effects=(OfferStarted("o1", "a1", at(32)),),
        offer_id="o1",
        offer_agent_id="a1",
        offer_expires_at=at(32),
        offer_fallback=S.QUEUED,
    )
    walk.step(
        event("agent.accepted", 5),
        S.ACTIVE,
        effects=(OfferEnded("o1", "a1", "accepted"),),
        **NO_OFFER,
        agent_id="a1",
        state=State.CUSTOMER_ANSWERED,
        answered_at=at(5),
        wait_s=5.0,
    )
    walk.step(
        event(
            "routing.transferred", 40, team=None, agent_id="a2", offer_id="o2", expires_at=at(70)
        ),
        S.OFFERED,
        effects=(OfferStarted("o2", "a2", at(70)),),
        offer_id="o2",
        offer_agent_id="a2",
        offer_expires_at=at(70),
        offer_fallback=S.ACTIVE,
    )
    assert walk.conversation.agent_id == "a1"  # not the row's agent yet
    back = walk.step(
        event("routing.offer_declined", 50, agent_id="a2", offer_id="o2", reason="rejected"),
        S.ACTIVE,
        effects=(OfferEnded("o2", "a2", "rejected"),),
        **NO_OFFER,
    )
    assert (back.agent_id, back.team, back.state) == ("a1", "sales", State.CUSTOMER_ANSWERED)
    walk.step(
        event("media.hangup", 90, source="agent"), S.WRAP_UP, hangup_source="agent", ended_at=at(90)
    )


def test_walk_transfer_to_an_agent_accepted_keeps_first_answer_and_wait():
    active = run(conversation_steps("offered_by_transfer"))  # answered at 5 by a1
    taken = apply(active, event("agent.accepted", 30, agent_id="a2", offer_id="o2")).conversation
    assert (taken.status, taken.agent_id, taken.state) == (S.ACTIVE, "a2", State.CUSTOMER_ANSWERED)
    assert (taken.answered_at, taken.wait_s) == (at(5), 5.0)  # a transfer's wait is not added


def test_walk_transfer_to_a_team_keeps_the_first_state():
    walk = Walk(event("conversation.created", 0))
    walk.step(event("routing.enqueued", 1), S.QUEUED, team="sales", queued_at=at(1))
    walk.step(
        event("routing.offered", 2),
        S.OFFERED,
        effects=(OfferStarted("o1", "a1", at(32)),),
        offer_id="o1",
        offer_agent_id="a1",
        offer_expires_at=at(32),
        offer_fallback=S.QUEUED,
    )
    walk.step(
        event("agent.accepted", 5),
        S.ACTIVE,
        effects=(OfferEnded("o1", "a1", "accepted"),),
        **NO_OFFER,
        agent_id="a1",
        state=State.CUSTOMER_ANSWERED,
        answered_at=at(5),
        wait_s=5.0,
    )
    walk.step(
        event("routing.transferred", 65, team="billing"), S.QUEUED, team="billing", queued_at=at(65)
    )
    walk.step(
        event("routing.offered", 70, agent_id="a2", offer_id="o2", expires_at=at(100)),
        S.OFFERED,
        effects=(OfferStarted("o2", "a2", at(100)),),
        offer_id="o2",
        offer_agent_id="a2",
        offer_expires_at=at(100),
        offer_fallback=S.QUEUED,
    )
    again = walk.step(
        event("agent.accepted", 80, agent_id="a2", offer_id="o2"),
        S.ACTIVE,
        effects=(OfferEnded("o2", "a2", "accepted"),),
        **NO_OFFER,
        agent_id="a2",  # state, answered_at and wait_s stay those of the first answer
    )
    assert (again.state, again.answered_at, again.wait_s) == (State.CUSTOMER_ANSWERED, at(5), 5.0)


def test_handle_time_after_a_transfer_to_a_team_counts_only_active_and_wrap_up():
    """docs/domain.md: handle_s is "seconds active + wrap-up". Active 5..65, queued again
    65..80 (waiting for a new agent, not handled), active 80..140, wrap-up 140..170."""
    closed = run(
        [
            *ANSWERED_THEN_TRANSFERRED_TO_A_TEAM,  # answered at 5, transferred at 65
            ("routing.offered", 70, {"agent_id": "a2", "offer_id": "o2"}),
            ("agent.accepted", 80, {"agent_id": "a2", "offer_id": "o2"}),
            ("media.hangup", 140, {"source": "customer"}),
            ("wrapup.submitted", 170, {}),
        ]
    )
    assert closed.handle_s == 60.0 + 60.0 + 30.0


def test_handle_time_when_closed_from_the_queue_after_a_transfer():
    """The issue's scenario: active 5..65, then 60 s in the new team's queue."""
    closed = run([*ANSWERED_THEN_TRANSFERRED_TO_A_TEAM, ("routing.queue_timeout", 125, {})])
    assert closed.handle_s == 60.0


def test_walk_second_transfer_during_a_transfer_from_active_declined_returns_to_active():
    """Active with a1, transferred to a2, then (still offered) to a3 who declines: the
    offer still came from a transfer to an agent made while active with a1, so the
    decline goes back to `active` with a1, as the first transfer's decline would."""
    offered = run(conversation_steps("offered_by_transfer"))
    to_a3 = apply(
        offered,
        event(
            "routing.transferred", 20, team=None, agent_id="a3", offer_id="o3", expires_at=at(50)
        ),
    ).conversation
    assert (to_a3.status, to_a3.agent_id) == (S.OFFERED, "a1")
    back = apply(
        to_a3, event("routing.offer_declined", 30, agent_id="a3", offer_id="o3")
    ).conversation
    assert (back.status, back.agent_id) == (S.ACTIVE, "a1")


def test_walk_outbound_sms_answered_by_the_first_reply():
    walk = Walk(
        event("conversation.initiated", 0, event_id="init-1", channel="sms", text="Hi!"),
        status=S.DIALING,
        channel="sms",
        channels=("sms",),
    )
    walk.step(
        event("media.message_status", 1, message_id="init-1", status="delivered"),
        S.DIALING,
        effects=(MessageStatusChanged("init-1", "delivered"),),
    )
    walk.step(
        event("media.message", 20, message_id="m2", sender="agent", text="Are you there?"),
        S.DIALING,
        effects=(TranscriptAppended("m2", "agent", "Are you there?", at(20)),),
    )
    active = walk.step(
        event("media.message", 300, message_id="m3", sender="customer", text="Yes"),
        S.ACTIVE,
        effects=(TranscriptAppended("m3", "customer", "Yes", at(300)),),
        state=State.CUSTOMER_ANSWERED,
        answered_at=at(300),
        wait_s=300.0,
    )
    assert active.hangup_source is None and active.version == 4


def test_walk_outbound_sms_without_reply_times_out():
    walk = Walk(event("conversation.initiated", 0, channel="sms", text="Hi!"))
    walk.step(
        event("media.no_answer", 86_400, reason="no_reply"),
        S.WRAP_UP,
        state=State.CUSTOMER_DID_NOT_RESPOND,
        ended_at=at(86_400),
        wait_s=86_400.0,
    )


def test_walk_no_answer_failed_leaves_state_empty_with_system_hangup():
    walk = Walk(event("conversation.initiated", 0))
    walk.step(event("media.ringing", 1), S.RINGING)
    failed = walk.step(
        event("media.no_answer", 11, reason="failed"),
        S.WRAP_UP,
        hangup_source="system",
        ended_at=at(11),
        wait_s=11.0,
    )
    assert failed.state is None
    closed = walk.step(event("wrapup.timeout", 41), S.CLOSED, closed_at=at(41), handle_s=30.0)
    assert (closed.state, closed.hangup_source, closed.answered_at) == (None, "system", None)


def test_walk_never_answered_inbound_has_wait_and_no_handle_time():
    closed = run([*conversation_steps("queued"), ("media.customer_dropped", 42.5, {})])
    assert (closed.status, closed.state, closed.hangup_source) == (
        S.CLOSED,
        State.DROPPED,
        "customer",
    )
    assert (closed.wait_s, closed.ended_at, closed.closed_at) == (42.5, at(42.5), at(42.5))
    assert closed.answered_at is None


def test_walk_csat_ticket_and_recording_after_close():
    closed = conversation_in("closed")
    walk = Walk.from_conversation(closed)
    walk.step(event("csat.received", 200, score=5), S.CLOSED, csat=5)
    walk.step(event("csat.received", 201, score=1), S.CLOSED, csat=1)
    end = walk.step(
        event("media.recording_ready", 202),
        S.CLOSED,
        effects=(RecordingAdded("r1", 61.5, "audio/mpeg"),),
        has_recording=True,
    )
    assert end.version == closed.version + 3
    assert (end.closed_at, end.handle_s) == (closed.closed_at, closed.handle_s)
