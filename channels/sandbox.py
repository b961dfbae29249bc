"""The sandbox: a simulated provider with the interface of a real one.

It rings, answers, drops, busies and replies with realistic random timing, and
writes a real WAV for every answered call. It does no I/O of its own but that file:
time comes from an injected clock (`now()` and `call_at(moment, callback)`, as
server/core/clock.py's), chance from an injected `random.Random`, and what a real provider
would post to the webhook goes to the injected `post` callback, one `Inbound` at a time.

Contacts with fixed outcomes (docs/channels.md), by the last two digits of the number:
  01  answers after 1 s; the customer hangs up 3 s later, leaving a 3 s recording
  02  busy (after 0.5 s)
  03  rings (after 0.3 s) and is never answered: no answer at the ring timeout
  04  the provider fails: place_call and send_message raise ProviderError
  05  every message gets a reply 1 s later
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from channels.base import (
    ChannelEvent,
    Inbound,
    OutboundCall,
    OutboundMessage,
    PayloadError,
    Placed,
    ProviderError,
    Recording,
    Reference,
    Reply,
    SignatureError,
    WebhookRequest,
    WebhookResult,
    credential,
    customer_for,
    event_id,
    same_secret,
)
from channels.wav import CONTENT_TYPE, write_wav

NAME = "sandbox"
SIGNATURE_HEADER = "X-Sandbox-Signature"
RING_TIMEOUT_S = 30.0  # as a real provider's default dial timeout
REPLIES = (
    "Thanks, that works for me.",
    "Can you call me back later?",
    "Yes, please go ahead.",
    "What time would suit you?",
    "I already paid that invoice.",
    "¿Hablan español?",
    "OK 👍",
)


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> datetime: ...

    def call_at(self, moment: datetime, callback: Callable[[], None]) -> Timer: ...


@dataclass(frozen=True)
class SandboxCredentials:
    """Optional: `secret` signs webhooks posted to /webhooks/sandbox/{tenant} (a way
    for a demo or a test to start an inbound contact over HTTP)."""

    secret: str | None = field(default=None, repr=False)

    @classmethod
    def from_dict(cls, values: Any) -> SandboxCredentials:
        return cls(secret=credential(values or {}, "secret", NAME, optional=True))


def signature(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class _Call:
    call_id: str
    reference: Reference
    contact: str
    timers: list[Timer] = field(default_factory=list)
    connected_at: datetime | None = None
    ended: bool = False


class SandboxProvider:
    name = NAME
    channels = frozenset({"call", "sms", "whatsapp"})

    def __init__(
        self,
        post: Callable[[Inbound], None],
        clock: Clock,
        rng: random.Random,
        recordings_dir: Path,
        credentials: SandboxCredentials | None = None,
        ring_timeout_s: float = RING_TIMEOUT_S,
    ):
        self.post = post
        self.clock = clock
        self.rng = rng
        self.recordings_dir = recordings_dir
        self.credentials = credentials or SandboxCredentials()
        self.ring_timeout_s = ring_timeout_s
        self._calls: dict[str, _Call] = {}

    # ------------------------------------------------------------------ webhook

    def verify(self, request: WebhookRequest) -> None:
        given = request.header(SIGNATURE_HEADER)
        if not given:
            raise SignatureError("missing_signature", f"{SIGNATURE_HEADER} is missing")
        secret = self.credentials.secret
        if not secret or not same_secret(signature(secret, request.body), given.strip()):
            raise SignatureError("bad_signature", f"{SIGNATURE_HEADER} does not match")

    def challenge(self, request: WebhookRequest) -> Reply | None:
        return None

    def parse(self, request: WebhookRequest, now: datetime) -> WebhookResult:
        """Start a simulated inbound contact: `{"kind": "call", "contact",
        "contacto_number"?}` or `{"kind": "message", "channel", "contact", "text",
        "contacto_number"?}`."""
        try:
            body = json.loads(request.body)
        except (UnicodeDecodeError, ValueError):
            raise PayloadError("sandbox webhook: the body is not JSON") from None
        if not isinstance(body, dict):
            raise PayloadError("sandbox webhook: the body is not an object")
        contact = body.get("contact")
        number = body.get("contacto_number")
        if not isinstance(contact, str) or not contact:
            raise PayloadError("sandbox webhook: contact is missing")
        if number is not None and not isinstance(number, str):
            raise PayloadError("sandbox webhook: contacto_number must be a string")
        if body.get("kind") == "call":
            item = self._inbound_call(contact, number)
        elif body.get("kind") == "message":
            channel, text = body.get("channel"), body.get("text")
            if channel not in ("sms", "whatsapp"):
                raise PayloadError("sandbox webhook: channel must be sms or whatsapp")
            if not isinstance(text, str):
                raise PayloadError("sandbox webhook: text is missing")
            item = self._inbound_message(contact, channel, text, number)
        else:
            raise PayloadError("sandbox webhook: kind must be call or message")
        return WebhookResult((item,), Reply(200, body=b"ok"))

    # ------------------------------------------------------------------ traffic

    def start_inbound_call(
        self, contact: str, contacto_number: str | None = None, name: str | None = None
    ) -> str:
        """A customer calls in; they hang up when their patience runs out before an
        agent is bridged. `name`: the caller's name, as a provider's caller-name
        lookup gives it (else the number). Returns the sandbox's call id."""
        item = self._inbound_call(contact, contacto_number, name)
        self.post(item)
        return item.reference.call_id or ""

    def start_inbound_message(
        self,
        contact: str,
        channel: str,
        text: str,
        contacto_number: str | None = None,
        name: str | None = None,
    ) -> None:
        self.post(self._inbound_message(contact, channel, text, contacto_number, name))

    def _inbound_call(self, contact: str, number: str | None, name: str | None = None) -> Inbound:
        call_id = self._new_id("CA")
        reference = Reference(
            kind="call", channel="call", call_id=call_id, contact=contact, contacto_number=number
        )
        call = _Call(call_id, reference, contact)
        self._calls[call_id] = call
        data: dict[str, Any] = {
            "channel": "call",
            "contact": contact,
            "customer": customer_for(contact, name),
        }
        if number:
            data["contacto_number"] = number
        opening = ChannelEvent(
            event_id(NAME, call_id, "created"), "conversation.created", self.clock.now(), data
        )
        patience = self.rng.uniform(20.0, 180.0)
        self._after(call, patience, lambda: self._customer_hangs_up(call))
        return Inbound(reference, opening=opening)

    def _inbound_message(
        self, contact: str, channel: str, text: str, number: str | None, name: str | None = None
    ):
        message_id = self._new_id("SM")
        now = self.clock.now()
        data: dict[str, Any] = {
            "channel": channel,
            "contact": contact,
            "customer": customer_for(contact, name),
        }
        if number:
            data["contacto_number"] = number
        reference = Reference(
            kind="message", channel=channel, contact=contact, contacto_number=number
        )
        opening = ChannelEvent(
            event_id(NAME, message_id, "created"), "conversation.created", now, data
        )
        message = ChannelEvent(
            event_id(NAME, message_id, "message"),
            "media.message",
            now,
            {"message_id": message_id, "sender": "customer", "text": text},
        )
        return Inbound(reference, (message,), opening)

    # ------------------------------------------------------------------ outbound

    def hold_markup(self) -> Reply:
        return Reply(200, body=b"hold")

    async def place_call(self, call: OutboundCall) -> Placed:
        outcome = _fixed_outcome(call.contact)
        if outcome == "04":
            raise ProviderError("sandbox: the provider failed (a contact ending in 04)", status=503)
        call_id = self._new_id("CA")
        reference = Reference(kind="call", channel="call", call_id=call.reference)
        state = _Call(call_id, reference, call.contact)
        self._calls[call_id] = state
        # The agent's phone answers at once; then the customer's rings.
        if outcome == "01":
            self._ring(state, 0.3)
            self._after(state, 1.0, lambda: self._answer(state, talk_s=3.0))
        elif outcome == "02":
            self._after(state, 0.5, lambda: self._no_answer(state, "busy"))
        elif outcome == "03":
            self._ring(state, 0.3)
            self._after(
                state, 0.3 + self.ring_timeout_s, lambda: self._no_answer(state, "no_answer")
            )
        else:
            self._random_call(state)
        return Placed(call_id, reference)

    def _random_call(self, state: _Call) -> None:
        ring_at = self.rng.uniform(0.5, 2.5)
        roll = self.rng.random()
        if roll < 0.08:
            self._after(state, ring_at, lambda: self._no_answer(state, "busy"))
            return
        if roll < 0.11:
            self._after(state, ring_at, lambda: self._no_answer(state, "failed"))
            return
        self._ring(state, ring_at)
        if roll < 0.26:
            self._after(
                state, ring_at + self.ring_timeout_s, lambda: self._no_answer(state, "no_answer")
            )
        elif roll < 0.32:  # the customer rejects the call while it rings
            declined_at = ring_at + self.rng.uniform(2.0, 10.0)
            self._after(state, declined_at, lambda: self._customer_hangs_up(state))
        else:
            answer_at = ring_at + self.rng.uniform(2.0, 15.0)
            talk_s = self.rng.uniform(15.0, 240.0)
            self._after(state, answer_at, lambda: self._answer(state, talk_s))

    async def send_message(self, message: OutboundMessage) -> Placed:
        outcome = _fixed_outcome(message.contact)
        if outcome == "04":
            raise ProviderError("sandbox: the provider failed (a contact ending in 04)", status=503)
        provider_id = self._new_id("SM")
        reference = Reference(
            kind="message",
            channel=message.channel,
            contact=message.contact,
            contacto_number=message.contacto_number,
        )
        if outcome == "05":
            sent_at, delivered_at, read_at, reply_at = 0.2, 0.5, 0.8, 1.0
        else:
            sent_at = self.rng.uniform(0.1, 0.6)
            delivered_at = sent_at + self.rng.uniform(0.3, 3.0)
            read_at = (
                delivered_at + self.rng.uniform(2.0, 30.0) if self.rng.random() < 0.8 else None
            )
            reply_at = (
                delivered_at + self.rng.uniform(5.0, 60.0) if self.rng.random() < 0.5 else None
            )
        for status, delay in (("sent", sent_at), ("delivered", delivered_at), ("read", read_at)):
            if delay is not None:
                self._at(delay, self._status_poster(reference, provider_id, message, status))
        if reply_at is not None:
            text = self.rng.choice(REPLIES)
            self._at(reply_at, lambda: self._reply(reference, provider_id, text))
        return Placed(provider_id, reference)

    def _status_poster(self, reference, provider_id, message, status) -> Callable[[], None]:
        def post() -> None:
            event = ChannelEvent(
                event_id(NAME, provider_id, "status", status),
                "media.message_status",
                self.clock.now(),
                {"message_id": message.message_id, "status": status},
            )
            self.post(Inbound(reference, (event,)))

        return post

    def _reply(self, reference: Reference, provider_id: str, text: str) -> None:
        reply_id = f"{provider_id}-reply"
        event = ChannelEvent(
            event_id(NAME, reply_id, "message"),
            "media.message",
            self.clock.now(),
            {"message_id": reply_id, "sender": "customer", "text": text},
        )
        self.post(Inbound(reference, (event,)))

    async def bridge(self, provider_call_id: str, agent_phone: str, contacto_number: str) -> None:
        call = self._live_call(provider_call_id)
        if call.connected_at is not None:
            return  # already bridged: a retry changes nothing
        self._cancel_timers(call)
        # The agent's phone picks up after a moment; the customer talks, then leaves.
        pickup_s = self.rng.uniform(0.5, 3.0)
        talk_s = self.rng.uniform(20.0, 240.0)
        self._after(call, pickup_s, lambda: self._connect(call, talk_s))

    async def hangup(self, provider_call_id: str) -> None:
        """Our side ends the call (the server has recorded the agent's hangup)."""
        call = self._live_call(provider_call_id)
        self._end(call, post_hangup=False)

    async def download_recording(self, recording: Recording, destination: Path) -> None:
        if recording.path is None or not recording.path.is_file():
            raise ProviderError(f"sandbox recording {recording.recording_id} is not on disk")
        shutil.copyfile(recording.path, destination)

    # ------------------------------------------------------------------ the calls

    def _ring(self, call: _Call, delay: float) -> None:
        self._after(call, delay, lambda: self._post(call, "ringing", "media.ringing"))

    def _answer(self, call: _Call, talk_s: float) -> None:
        self._post(call, "answered", "media.answered")
        self._connect(call, talk_s)

    def _connect(self, call: _Call, talk_s: float) -> None:
        call.connected_at = self.clock.now()
        self._after(call, talk_s, lambda: self._customer_hangs_up(call))

    def _no_answer(self, call: _Call, reason: str) -> None:
        self._post(call, reason, "media.no_answer", {"reason": reason})
        self._forget(call)

    def _customer_hangs_up(self, call: _Call) -> None:
        self._end(call, post_hangup=True)

    def _end(self, call: _Call, post_hangup: bool) -> None:
        if call.ended:
            return
        self._cancel_timers(call)
        call.ended = True
        if post_hangup:
            self._post(call, "hangup", "media.hangup", {"source": "customer"})
        if call.connected_at is not None:
            self._record(call)
        self._forget(call)

    def _record(self, call: _Call) -> None:
        assert call.connected_at is not None
        duration = round((self.clock.now() - call.connected_at).total_seconds(), 3)
        recording_id = f"sandbox-{call.call_id}"
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        path = self.recordings_dir / f"{recording_id}.wav"
        write_wav(path, duration, self.rng)
        event = ChannelEvent(
            event_id(NAME, call.call_id, "recording"),
            "media.recording_ready",
            self.clock.now(),
            {"recording_id": recording_id, "duration_s": duration, "content_type": CONTENT_TYPE},
        )
        recording = Recording(recording_id, duration, CONTENT_TYPE, path=path)
        self.post(Inbound(call.reference, (event,), recording=recording))

    # ------------------------------------------------------------------ plumbing

    def _post(self, call: _Call, what: str, type_: str, data: dict | None = None) -> None:
        event = ChannelEvent(
            event_id(NAME, call.call_id, what), type_, self.clock.now(), dict(data or {})
        )
        self.post(Inbound(call.reference, (event,)))

    def _after(self, call: _Call, delay_s: float, action: Callable[[], None]) -> None:
        call.timers.append(self._at(delay_s, action))

    def _at(self, delay_s: float, action: Callable[[], None]) -> Timer:
        return self.clock.call_at(self.clock.now() + timedelta(seconds=delay_s), action)

    def _cancel_timers(self, call: _Call) -> None:
        for timer in call.timers:
            timer.cancel()
        call.timers.clear()

    def _forget(self, call: _Call) -> None:
        self._cancel_timers(call)
        self._calls.pop(call.call_id, None)

    def _live_call(self, provider_call_id: str) -> _Call:
        call = self._calls.get(provider_call_id)
        if call is None:
            raise ProviderError(f"sandbox: no live call {provider_call_id[:60]!r}", status=404)
        return call

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{self.rng.getrandbits(64):016x}"


def _fixed_outcome(contact: str) -> str | None:
    digits = "".join(c for c in contact if c.isdigit())
    suffix = digits[-2:]
    return suffix if suffix in ("01", "02", "03", "04", "05") else None
