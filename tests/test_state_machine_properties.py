"""Hypothesis: random event sequences for one conversation keep the machine's
invariants.

Each step draws an event type from all of EVENT_TYPES (three times in four from those
with a row from the current status, so walks get deep), with data from small sets of
agents, offers and teams so that offers match often, and an occurred_at that usually
moves forward but sometimes goes back.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from state_machine import (
    ENDED_STATUSES,
    EVENT_TYPES,
    HANDLING_STATUSES,
    Applied,
    Conversation,
    OfferEnded,
    OfferStarted,
    Rejected,
    Stale,
    State,
    Status,
    apply,
    parse_event,
)
from tests.machine_helpers import CID, ROWS_FROM, T0

AGENTS = ["a1", "a2"]
OFFERS = ["o1", "o2"]
TEAMS = ["sales", "billing"]
CHANNELS = ["call", "chat", "sms", "whatsapp"]
WHO = ["customer", "agent", "system"]
EXPIRES = "2026-11-24T10:05:00Z"


def variants(**choices: list) -> list[dict]:
    """Every combination of the choices, as data dicts (None leaves a key out)."""
    combos = itertools.product(*choices.values())
    return [
        {key: value for key, value in zip(choices, combo, strict=True) if value is not None}
        for combo in combos
    ]


# Every data a step may carry, per event type: one draw picks one.
DATA: dict[str, list[dict]] = {
    "conversation.created": variants(
        channel=CHANNELS, contact=["+15550100"], customer=[{"name": "A"}], team=[None, *TEAMS]
    ),
    "conversation.initiated": variants(
        channel=CHANNELS, contact=["+15550100"], agent_id=AGENTS, text=[None, "hi"]
    ),
    "routing.out_of_hours": variants(team=TEAMS),
    "routing.enqueued": variants(team=TEAMS),
    "routing.enqueue_failed": variants(team=TEAMS, reason=["full"]),
    "routing.assignment_failed": variants(reason=["nobody"]),
    "routing.offered": variants(agent_id=AGENTS, offer_id=OFFERS, expires_at=[EXPIRES]),
    "routing.offer_declined": variants(
        agent_id=AGENTS, offer_id=OFFERS, reason=["rejected", "expired"]
    ),
    "agent.accepted": variants(agent_id=AGENTS, offer_id=OFFERS),
    "routing.queue_timeout": [{}],
    "routing.transferred": [
        *variants(team=TEAMS),
        *variants(agent_id=AGENTS, offer_id=OFFERS, expires_at=[EXPIRES]),
    ],
    "media.customer_dropped": [{}],
    "media.ringing": [{}],
    "media.answered": [{}],
    "media.no_answer": variants(reason=["no_answer", "busy", "failed", "no_reply"]),
    "media.message": variants(message_id=["m1", "m2"], sender=WHO, text=["x"]),
    "media.message_status": variants(
        message_id=["m1", "m2"], status=["sent", "delivered", "read", "failed"]
    ),
    "media.channel_added": variants(channel=CHANNELS),
    "media.hangup": variants(source=WHO),
    "media.recording_ready": variants(
        recording_id=["r1"], duration_s=[0, 61.5], content_type=["audio/wav"]
    ),
    "wrapup.submitted": variants(disposition=["ok", "sale"], note=[None, "n"]),
    "wrapup.timeout": [{}],
    "csat.received": variants(score=[1, 2, 3, 4, 5]),
    "ticket.linked": variants(ticket_id=["T1", "T2"]),
}

ALL_TYPES = sorted(EVENT_TYPES)
CREATING = ["conversation.created", "conversation.initiated"]
# Columns fixed once they have a value.
WRITE_ONCE = ("state", "answered_at", "wait_s", "ended_at", "closed_at", "handle_s")


def plausible_types(conversation: Conversation | None) -> list[str]:
    if conversation is None:
        return CREATING
    return sorted(t for t, sources in ROWS_FROM.items() if conversation.status in sources)


def check_invariants(before: Conversation | None, after: Conversation) -> None:
    assert isinstance(after.status, Status)
    assert after.state is None or isinstance(after.state, State)
    assert (after.offer_id is not None) == (after.status is Status.OFFERED)
    assert (after.offer_agent_id is not None) == (after.status is Status.OFFERED)
    assert (after.answered_at is not None) == (after.state is State.CUSTOMER_ANSWERED)
    if after.status in ENDED_STATUSES:
        assert after.wait_s is not None
    if after.status is Status.CLOSED:
        assert after.closed_at is not None
    if after.status in HANDLING_STATUSES:
        assert after.agent_id is not None  # connected to an agent, or was
    # The groups the server reads statuses by (state_machine.conversation).
    assert (after.handling_since is not None) == (after.status in HANDLING_STATUSES)
    assert (after.ended_at is not None) == (after.status in ENDED_STATUSES)
    for seconds in (after.wait_s, after.handle_s):
        assert seconds is None or seconds >= 0
    assert after.channel == ("omnichannel" if len(after.channels) > 1 else after.channels[0])
    if before is None:
        assert after.version == 1
        return
    assert after.version == before.version + 1
    assert after.id == before.id and after.created_at == before.created_at
    assert after.direction == before.direction
    assert after.last_occurred_at >= before.last_occurred_at
    for name in WRITE_ONCE:
        if getattr(before, name) is not None:
            assert getattr(after, name) == getattr(before, name), name
    if before.status is Status.CLOSED:
        assert after.status is Status.CLOSED
    assert set(before.channels) <= set(after.channels)
    assert after.has_recording or not before.has_recording


def check_offer_effects(before: Conversation | None, applied: Applied) -> None:
    """The offer effects tell every change of the current offer (timers and popups
    follow them): the offer left behind ends once, naming its agent; an offer made
    starts, and is then the current one."""
    after = applied.conversation
    ended = [e for e in applied.effects if isinstance(e, OfferEnded)]
    started = [e for e in applied.effects if isinstance(e, OfferStarted)]
    old = None if before is None else before.offer_id
    if old is not None and after.offer_id != old:
        assert [(e.offer_id, e.agent_id) for e in ended] == [(old, before.offer_agent_id)]
    else:
        assert ended == []
    assert len(started) <= 1
    if started:
        assert (after.offer_id, after.offer_agent_id) == (started[0].offer_id, started[0].agent_id)
        assert after.offer_expires_at == started[0].expires_at
    elif after.offer_id != old:
        assert after.offer_id is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_event_sequences_keep_the_invariants(data):
    conversation: Conversation | None = None
    clock = T0
    greatest = None
    length = data.draw(st.integers(1, 40), label="length")
    for index in range(length):
        if data.draw(st.integers(0, 3), label="plausible") > 0:
            type_ = data.draw(st.sampled_from(plausible_types(conversation)), label="type")
        else:
            type_ = data.draw(st.sampled_from(ALL_TYPES), label="type")
        clock += timedelta(milliseconds=data.draw(st.integers(-30_000, 60_000), label="dt"))
        ev = parse_event(
            {
                "event_id": f"e{index}",
                "type": type_,
                "conversation_id": CID,
                "occurred_at": clock,
                "data": data.draw(st.sampled_from(DATA[type_]), label="data"),
            }
        )
        given_conversation = conversation
        # every value is immutable, so a shallow copy of the fields sees any change
        snapshot = None if conversation is None else dict(vars(conversation))
        try:
            applied = apply(conversation, ev)
        except Stale as error:
            assert error.code == "stale" and error.outcome == "stale"
            assert conversation is not None  # nothing is stale about no conversation
            assert str(conversation.status) in error.message and type_ in error.message
        except Rejected as error:
            assert error.outcome == "rejected"
            if conversation is None:
                assert error.code == "unknown_conversation"
                assert type_ not in CREATING
            else:
                # rule 4: an invalid event is rejected only when newer than all applied
                assert error.code == "invalid_transition"
                assert ev.occurred_at > conversation.last_occurred_at
                assert str(conversation.status) in error.message and type_ in error.message
        else:
            assert isinstance(applied, Applied)
            check_invariants(conversation, applied.conversation)
            check_offer_effects(conversation, applied)
            greatest = max(greatest or ev.occurred_at, ev.occurred_at)
            assert applied.conversation.last_occurred_at == greatest
            conversation = applied.conversation
            event(f"reached {conversation.status}")  # coverage: --hypothesis-show-statistics
        if given_conversation is not None:  # the conversation given is never changed
            assert vars(given_conversation) == snapshot


def test_every_event_type_has_a_data_strategy():
    assert set(DATA) == set(EVENT_TYPES)
