"""The sandbox provider: docs/api.md's contacts with fixed outcomes, realistic random
traffic with a seeded random source, inbound calls held and bridged, WAV recordings
readable by `wave`, and its signed webhook. Time moves only when the test says."""

from __future__ import annotations

import json
import random
import wave
from datetime import timedelta
from pathlib import Path

import pytest

from channels.base import (
    ChannelEvent,
    Inbound,
    OutboundCall,
    OutboundMessage,
    ProviderError,
    SignatureError,
    WebhookRequest,
)
from channels.sandbox import SandboxCredentials, SandboxProvider, signature
from tests.support import ManualClock
from tests.test_channels_helpers import NOW, initiated, run_events

AGENT_PHONE = "+15557770000"
OUR_NUMBER = "+15559000000"


class Posted:
    """The sandbox's `post` callback: what it would have sent to the webhook."""

    def __init__(self) -> None:
        self.items: list[Inbound] = []

    def __call__(self, item: Inbound) -> None:
        self.items.append(item)

    def events(self) -> list[ChannelEvent]:
        return [event for item in self.items for event in item.events]

    def kinds(self) -> list[tuple[str, dict]]:
        return [(event.type, event.data) for event in self.events()]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
def posted() -> Posted:
    return Posted()


@pytest.fixture
def sandbox(clock, posted, tmp_path: Path) -> SandboxProvider:
    return SandboxProvider(posted, clock, random.Random(8), tmp_path / "recordings")


def call_to(contact: str, reference: str = "conv-ref") -> OutboundCall:
    return OutboundCall(reference, contact, OUR_NUMBER, AGENT_PHONE)


def message_to(contact: str, channel: str = "sms") -> OutboundMessage:
    return OutboundMessage(channel, contact, OUR_NUMBER, "Hello from the team", "msg-1")


def advance(clock: ManualClock, seconds: float, step: float = 0.1) -> None:
    """Move the clock in small steps, as time passes: a timer that fires sets the
    next one from the time it fired, not from the end of the whole advance."""
    end = clock.now() + timedelta(seconds=seconds)
    while clock.now() + timedelta(seconds=step) < end:
        clock.advance(timedelta(seconds=step))
    clock.advance(end - clock.now())


# ------------------------------------------------------------------------ fixed outcomes


async def test_01_answers_after_a_second_and_hangs_up_three_seconds_later_with_a_recording(
    sandbox, clock, posted, tmp_path
):
    placed = await sandbox.place_call(call_to("+15550100001"))
    assert placed.reference.call_id == "conv-ref"
    advance(clock, 0.99)
    assert posted.kinds() == [("media.ringing", {})]
    advance(clock, 0.01)
    assert posted.kinds()[-1] == ("media.answered", {})
    advance(clock, 2.99)
    assert len(posted.events()) == 2
    advance(clock, 0.01)
    hangup, ready = posted.events()[2:]
    assert (hangup.type, hangup.data) == ("media.hangup", {"source": "customer"})
    assert hangup.occurred_at == NOW + timedelta(seconds=4)
    assert ready.type == "media.recording_ready"
    assert ready.data["duration_s"] == 3.0 and ready.data["content_type"] == "audio/wav"
    assert all(item.reference.call_id == "conv-ref" for item in posted.items)

    recording = posted.items[-1].recording
    with wave.open(str(recording.path)) as audio:
        assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate()) == (1, 2, 8000)
        assert audio.getnframes() == 3 * 8000
        assert any(audio.readframes(8000))  # not silence throughout
    copy = tmp_path / "served.wav"
    await sandbox.download_recording(recording, copy)
    assert copy.read_bytes() == recording.path.read_bytes()

    # What ingest would do with it: dialing -> ringing -> active -> wrap_up, recorded.
    statuses = []
    conversation = None
    for event in [initiated(contact="+15550100001"), *posted.events()]:
        conversation, outcomes = run_events([event], conversation)
        assert outcomes == ["applied"]
        statuses.append(conversation.status)
    assert statuses == ["dialing", "ringing", "active", "wrap_up", "wrap_up"]
    assert conversation.state == "customer_answered" and conversation.has_recording


async def test_02_is_busy(sandbox, clock, posted):
    await sandbox.place_call(call_to("+15550100002"))
    advance(clock, 60)
    assert posted.kinds() == [("media.no_answer", {"reason": "busy"})]
    conversation, outcomes = run_events([initiated(), *posted.events()])
    assert outcomes == ["applied", "applied"]
    assert (conversation.status, conversation.state) == ("wrap_up", "customer_did_not_respond")


async def test_03_rings_and_is_never_answered(sandbox, clock, posted):
    await sandbox.place_call(call_to("+15550100003"))
    advance(clock, 30.0)
    assert posted.kinds() == [("media.ringing", {})]
    advance(clock, 0.3)
    assert posted.kinds()[-1] == ("media.no_answer", {"reason": "no_answer"})
    advance(clock, 600)
    assert len(posted.items) == 2


async def test_04_makes_the_provider_fail(sandbox, clock, posted):
    with pytest.raises(ProviderError) as caught:
        await sandbox.place_call(call_to("+15550100004"))
    assert caught.value.status == 503 and not caught.value.safe_to_retry
    with pytest.raises(ProviderError):
        await sandbox.send_message(message_to("+15550100004"))
    advance(clock, 600)
    assert posted.items == []


async def test_05_replies_to_every_message_a_second_later(sandbox, clock, posted):
    await sandbox.send_message(message_to("+15550100005", "whatsapp"))
    advance(clock, 0.99)
    assert [data["status"] for _, data in posted.kinds()] == ["sent", "delivered", "read"]
    assert {data["message_id"] for _, data in posted.kinds()} == {"msg-1"}
    advance(clock, 0.01)
    type_, data = posted.kinds()[-1]
    assert type_ == "media.message" and data["sender"] == "customer"
    assert posted.items[-1].reference.contact == "+15550100005"
    await sandbox.send_message(message_to("+15550100005", "whatsapp"))
    advance(clock, 1.0)
    replies = [e for e in posted.events() if e.type == "media.message"]
    assert len(replies) == 2 and replies[0].event_id != replies[1].event_id
    # The first reply answers the outgoing message.
    conversation, outcomes = run_events([initiated("whatsapp", "+15550100005"), replies[0]])
    assert outcomes == ["applied", "applied"]
    assert (conversation.status, conversation.state) == ("active", "customer_answered")


# ------------------------------------------------------------------------ random traffic


async def run_random_calls(seed: int, count: int, tmp_path: Path) -> list[list[ChannelEvent]]:
    clock, posted = ManualClock(NOW), Posted()
    sandbox = SandboxProvider(posted, clock, random.Random(seed), tmp_path / str(seed))
    for n in range(count):
        await sandbox.place_call(call_to(f"+155502{n:04d}9", reference=f"r{n}"))
    advance(clock, 3600)
    calls: dict[str, list[ChannelEvent]] = {}
    for item in posted.items:
        calls.setdefault(item.reference.call_id, []).extend(item.events)
    return [calls.get(f"r{n}", []) for n in range(count)]


async def test_random_calls_are_realistic_and_each_walks_the_state_machine(tmp_path):
    calls = await run_random_calls(seed=11, count=50, tmp_path=tmp_path)
    endings = set()
    for events in calls:
        assert events, "every call ends somehow"
        conversation, outcomes = run_events([initiated(), *events])
        assert set(outcomes) == {"applied"}, [e.type for e in events]
        assert conversation.status == "wrap_up"
        endings.add((events[-1].type, tuple(events[-1].data.values())))
        if any(e.type == "media.answered" for e in events):
            ready = events[-1]
            assert ready.type == "media.recording_ready" and ready.data["duration_s"] >= 15
    assert {
        ("media.recording_ready", ()),
        ("media.no_answer", ("busy",)),
        ("media.no_answer", ("no_answer",)),
        ("media.no_answer", ("failed",)),
        ("media.hangup", ("customer",)),
    } <= {(t, () if t == "media.recording_ready" else d) for t, d in endings}


async def test_the_same_seed_gives_the_same_traffic(tmp_path):
    def shape(calls):
        return [[(e.type, e.occurred_at, tuple(e.data.items())) for e in c] for c in calls]

    first = await run_random_calls(seed=3, count=20, tmp_path=tmp_path / "a")
    again = await run_random_calls(seed=3, count=20, tmp_path=tmp_path / "b")
    other = await run_random_calls(seed=4, count=20, tmp_path=tmp_path / "c")
    assert shape(first) == shape(again)
    assert shape(first) != shape(other)


# ------------------------------------------------------------------------ inbound


def test_an_inbound_caller_who_waits_too_long_hangs_up(sandbox, clock, posted):
    call_id = sandbox.start_inbound_call("+15550123456", OUR_NUMBER)
    (item,) = posted.items
    assert item.reference.call_id == call_id
    assert item.opening.data["contacto_number"] == OUR_NUMBER
    advance(clock, 181)
    assert posted.kinds() == [("media.hangup", {"source": "customer"})]
    conversation, outcomes = run_events([item.opening, *posted.events()])
    assert outcomes == ["applied", "applied"]
    assert (conversation.status, conversation.state) == ("closed", "dropped")


async def test_a_bridged_inbound_caller_talks_then_leaves_a_recording(sandbox, clock, posted):
    call_id = sandbox.start_inbound_call("+15550123456", OUR_NUMBER)
    advance(clock, 10)
    await sandbox.bridge(call_id, AGENT_PHONE, OUR_NUMBER)
    await sandbox.bridge(call_id, AGENT_PHONE, OUR_NUMBER)  # a retry changes nothing
    advance(clock, 300)  # past any patience: bridging cancelled it
    hangup, ready = posted.events()
    assert (hangup.type, hangup.data) == ("media.hangup", {"source": "customer"})
    assert ready.type == "media.recording_ready"
    with wave.open(str(posted.items[-1].recording.path)) as audio:
        assert abs(audio.getnframes() / 8000 - ready.data["duration_s"]) < 0.001


async def test_our_hangup_of_an_answered_call_posts_only_its_recording(sandbox, clock, posted):
    placed = await sandbox.place_call(call_to("+15550100001"))
    advance(clock, 2.0)
    await sandbox.hangup(placed.provider_id)
    assert [e.type for e in posted.events()] == [
        "media.ringing",
        "media.answered",
        "media.recording_ready",
    ]
    assert posted.events()[-1].data["duration_s"] == 1.0
    advance(clock, 60)
    assert len(posted.events()) == 3
    with pytest.raises(ProviderError, match="no live call"):
        await sandbox.hangup(placed.provider_id)


# ------------------------------------------------------------------------ webhook


def test_its_webhook_is_signed_and_starts_an_inbound_contact(clock, posted, tmp_path):
    sandbox = SandboxProvider(
        posted, clock, random.Random(1), tmp_path, SandboxCredentials.from_dict({"secret": "s3"})
    )
    body = json.dumps(
        {"kind": "message", "channel": "sms", "contact": "+15550123456", "text": "hi"}
    ).encode()
    good = WebhookRequest("POST", "https://x/webhooks/sandbox/acme", {}, body)
    with pytest.raises(SignatureError) as caught:
        sandbox.verify(good)
    assert caught.value.status == 401
    bad = WebhookRequest("POST", good.url, {"X-Sandbox-Signature": signature("s4", body)}, body)
    with pytest.raises(SignatureError) as caught:
        sandbox.verify(bad)
    assert caught.value.status == 403
    signed = WebhookRequest("POST", good.url, {"X-Sandbox-Signature": signature("s3", body)}, body)
    sandbox.verify(signed)
    (item,) = sandbox.parse(signed, NOW).items
    assert item.opening.data["channel"] == "sms" and item.events[0].data["text"] == "hi"
    assert posted.items == []  # answered to the request, not posted a second time
