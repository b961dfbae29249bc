"""The machine's groups of statuses and states, held to what the machine does.

The server asks these groups instead of listing statuses itself (the wallboard's
counts, the router's queues and agents' load, the timers). Each test finds the
statuses in which the bare machine behaves as the group's name says, by applying real
events to the canonical conversation of every status, and compares them with the
group.
"""

from __future__ import annotations

import pytest

from state_machine import (
    ANSWERED_STATES,
    ENDED_STATUSES,
    HANDLING_STATUSES,
    HOLDING_STATUSES,
    ROUTABLE_STATUSES,
    UNANSWERED_STATES,
    UNROUTED_STATUSES,
    WAITING_STATUSES,
    Applied,
    Conversation,
    Rejected,
    Stale,
    State,
    Status,
    apply,
)
from tests.machine_helpers import INBOUND, SOURCE_OF_STATUS, conversation_in, event, run

S = Status
LATER = 500  # seconds after T0: after every canonical conversation's last event


def in_status(status: Status) -> Conversation:
    conversation = conversation_in(SOURCE_OF_STATUS[status])
    assert conversation.status is status
    return conversation


def applied_in(type_: str, **data) -> dict[Status, Applied]:
    """Per status where it applies, what `type_` does to that status's conversation."""
    found = {}
    for status in Status:
        try:
            found[status] = apply(in_status(status), event(type_, LATER, **data))
        except (Stale, Rejected):
            continue
    return found


def test_answered_and_unanswered_states_are_every_state_once():
    assert ANSWERED_STATES | UNANSWERED_STATES == frozenset(State)
    assert not ANSWERED_STATES & UNANSWERED_STATES
    # The state an answer writes is the answered one.
    assert in_status(S.ACTIVE).state in ANSWERED_STATES


@pytest.mark.parametrize(
    ("steps", "state"),
    [
        ([("routing.out_of_hours", 1, {})], State.OUT_OF_BUSINESS_HOURS),
        ([("routing.enqueue_failed", 1, {})], State.ENQUEUE_FAILED),
        ([("routing.assignment_failed", 1, {})], State.AGENT_ASSIGNMENT_FAILED),
        ([("media.customer_dropped", 1, {})], State.DROPPED),
        ([("routing.enqueued", 1, {}), ("routing.queue_timeout", 60, {})], State.QUEUE_TIMEOUT),
    ],
)
def test_every_way_to_close_without_an_agent_is_unanswered(steps, state):
    closed = run([INBOUND[0], *steps])
    assert (closed.status, closed.state) == (S.CLOSED, state)
    assert closed.state in UNANSWERED_STATES


def test_an_outgoing_call_nobody_answers_is_unanswered():
    ended = run([("conversation.initiated", 0, {}), ("media.no_answer", 30, {})])
    assert ended.state is State.CUSTOMER_DID_NOT_RESPOND
    assert ended.state in UNANSWERED_STATES


def test_routable_statuses_are_those_a_routing_decision_applies_in():
    assert set(applied_in("routing.offered")) == ROUTABLE_STATUSES
    assert set(applied_in("routing.assignment_failed")) == ROUTABLE_STATUSES


def test_waiting_statuses_are_those_a_queue_time_out_closes():
    timed_out = applied_in("routing.queue_timeout")
    assert set(timed_out) == WAITING_STATUSES
    assert {a.conversation.state for a in timed_out.values()} == {State.QUEUE_TIMEOUT}


def test_unrouted_statuses_are_those_a_customer_leaving_drops():
    left = applied_in("media.customer_dropped")
    assert set(left) == UNROUTED_STATUSES
    assert {a.conversation.state for a in left.values()} == {State.DROPPED}
    assert ROUTABLE_STATUSES | WAITING_STATUSES == UNROUTED_STATUSES


def test_handling_statuses_are_those_handle_time_counts_in():
    """Inbound life: accepted 5, hangup 65, wrap-up submitted 95: 90 s handled."""
    conversation = None
    for type_, t, data in INBOUND:
        conversation = apply(conversation, event(type_, t, **data)).conversation
        handling = conversation.handling_since is not None
        assert handling == (conversation.status in HANDLING_STATUSES), conversation.status
    assert conversation.handle_s == 90


def test_ended_statuses_are_those_with_an_end():
    for status in Status:
        ended = in_status(status).ended_at is not None
        assert ended == (status in ENDED_STATUSES), status


def held_agent(conversation: Conversation) -> str | None:
    """The agent the conversation keeps busy, as the server reads it."""
    if conversation.status not in HOLDING_STATUSES:
        return None
    if conversation.status is S.OFFERED:
        return conversation.offer_agent_id
    return conversation.agent_id


def test_holding_statuses_keep_the_agent_from_the_offer_to_the_end_of_wrap_up():
    conversation = None
    holding = []
    for type_, t, data in INBOUND:
        conversation = apply(conversation, event(type_, t, **data)).conversation
        holding.append(held_agent(conversation))
    # created, enqueued: nobody; offered, accepted, hung up: a1; wrapped up: free.
    assert holding == [None, None, "a1", "a1", "a1", None]
    # An outgoing call keeps the agent who started it once answered.
    assert held_agent(conversation_in("active_outbound")) == "a1"
