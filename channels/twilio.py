"""Twilio Programmable Voice and Messaging.

Signatures: https://www.twilio.com/docs/usage/security#validating-requests
Voice webhooks: https://www.twilio.com/docs/voice/twiml#request-parameters
Call status callbacks: https://www.twilio.com/docs/voice/api/call-resource#statuscallback
Recording callbacks: https://www.twilio.com/docs/voice/twiml/dial#recordingstatuscallback
Messaging webhooks: https://www.twilio.com/docs/messaging/guides/webhook-request
Outbound: https://www.twilio.com/docs/voice/api/call-resource#create-a-call-resource and
https://www.twilio.com/docs/messaging/api/message-resource#create-a-message-resource

Every callback URL this adapter gives Twilio is the tenant's webhook URL with a query
naming what it is about (`ref`: the call it belongs to, `leg`: `customer`, `agent`,
`bridge`, `recording`; `message_id` for statuses). Twilio signs the URL with its query,
so those cannot be forged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit
from xml.sax.saxutils import escape, quoteattr

import httpx

from channels import http_api
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
    provider_time,
    required,
    same_secret,
    seconds,
    with_query,
)

NAME = "twilio"
API_BASE = "https://api.twilio.com"
# Twilio's own hold music, as used in its documentation's examples.
DEFAULT_HOLD_MUSIC = "https://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3"
SIGNATURE_HEADER = "X-Twilio-Signature"
TWIML = "application/xml; charset=utf-8"
WHATSAPP_PREFIX = "whatsapp:"

# Call statuses: https://www.twilio.com/docs/voice/api/call-resource#call-status-values
CALL_STATUSES = frozenset(
    {"queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed"}
    | {"no-answer", "canceled"}
)
_NO_ANSWER_REASON = {"busy": "busy", "no-answer": "no_answer", "failed": "failed"}
_MESSAGE_STATUS = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
}


@dataclass(frozen=True)
class TwilioCredentials:
    account_sid: str
    auth_token: str = field(repr=False)
    hold_music_url: str = DEFAULT_HOLD_MUSIC

    @classmethod
    def from_dict(cls, values: Any) -> TwilioCredentials:
        return cls(
            account_sid=credential(values, "account_sid", NAME),
            auth_token=credential(values, "auth_token", NAME),
            hold_music_url=credential(values, "hold_music_url", NAME, optional=True)
            or DEFAULT_HOLD_MUSIC,
        )


def signature(auth_token: str, url: str, params: list[tuple[str, str]]) -> str:
    """X-Twilio-Signature: base64 HMAC-SHA1 of the URL followed by each POST parameter's
    name and value, sorted by name (then value), with no separators."""
    payload = url
    for key in sorted({k for k, _ in params}):
        for value in sorted({v for k, v in params if k == key}):
            payload += key + value
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _url_variants(url: str) -> list[str]:
    """The URL as given, and with its default port added or removed: proxies differ in
    what they keep, and Twilio signs what it called (its own libraries try both)."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    host = parts.hostname or ""
    variants = [url]
    if default is not None:
        if parts.port is None:
            variants.append(urlunsplit(parts._replace(netloc=f"{host}:{default}")))
        elif parts.port == default:
            variants.append(urlunsplit(parts._replace(netloc=host)))
    return variants


class TwilioProvider:
    name = NAME
    channels = frozenset({"call", "sms", "whatsapp"})

    def __init__(
        self,
        credentials: TwilioCredentials,
        webhook_url: str,
        http: httpx.AsyncClient,
        api_base: str = API_BASE,
    ):
        self.credentials = credentials
        self.webhook_url = webhook_url
        self.http = http
        self.api_base = api_base.rstrip("/")

    # ------------------------------------------------------------------ inbound

    def verify(self, request: WebhookRequest) -> None:
        given = request.header(SIGNATURE_HEADER)
        if not given:
            raise SignatureError("missing_signature", f"{SIGNATURE_HEADER} is missing")
        params = request.form_pairs() if request.method.upper() == "POST" else []
        for url in _url_variants(request.url):
            if same_secret(signature(self.credentials.auth_token, url, params), given):
                return
        raise SignatureError("bad_signature", f"{SIGNATURE_HEADER} does not match")

    def challenge(self, request: WebhookRequest) -> Reply | None:
        return None  # Twilio has no verification handshake

    def parse(self, request: WebhookRequest, now: datetime) -> WebhookResult:
        # Twilio sends a webhook set to GET with its parameters in the query.
        form = request.form() if request.method.upper() == "POST" else request.query()
        query = request.query()
        if "RecordingSid" in form:
            return self._recording(form, query, now)
        if "MessageStatus" in form:
            return self._message_status(form, query, now)
        if "MessageSid" in form:
            return self._inbound_message(form, now)
        if "CallSid" in form:
            return self._call(form, query, now)
        raise PayloadError("twilio webhook: neither CallSid, MessageSid nor RecordingSid")

    def _call(self, form: dict, query: dict, now: datetime) -> WebhookResult:
        call_sid = required(form, "CallSid", "twilio call")
        status = required(form, "CallStatus", "twilio call")
        if status not in CALL_STATUSES:
            raise PayloadError(f"twilio call: unknown CallStatus {status[:40]!r}")
        at = _timestamp(form, now)
        ref = query.get("ref")
        leg = query.get("leg", "customer")
        if leg == "bridge":
            # The inbound bridge's <Dial> ended: hang up after a conversation, or put
            # the caller back on hold when the agent's phone did not take the call.
            done = form.get("DialCallStatus") == "completed"
            return WebhookResult((), _twiml("<Hangup/>") if done else self.hold_markup())
        if ref is None:
            return self._inbound_call(form, call_sid, status, at)
        reference = Reference(kind="call", channel="call", call_id=ref)
        events = _outbound_leg_events(ref, leg, status, at)
        return WebhookResult((Inbound(reference, events),), _twiml(""))

    def _inbound_call(self, form: dict, call_sid: str, status: str, at: datetime) -> WebhookResult:
        contact = _phone(required(form, "From", "twilio call"))
        number = _phone(form.get("To", "")) or None
        reference = Reference(
            kind="call", channel="call", call_id=call_sid, contact=contact, contacto_number=number
        )
        if status in ("queued", "ringing", "in-progress"):
            data: dict[str, Any] = {
                "channel": "call",
                "contact": contact,
                "customer": customer_for(contact, form.get("CallerName")),
            }
            if number:
                data["contacto_number"] = number
            opening = ChannelEvent(
                event_id(NAME, call_sid, "created"), "conversation.created", at, data
            )
            return WebhookResult((Inbound(reference, opening=opening),), self.hold_markup())
        source = "system" if status == "failed" else "customer"
        hangup = ChannelEvent(
            event_id(NAME, call_sid, "customer", status), "media.hangup", at, {"source": source}
        )
        return WebhookResult((Inbound(reference, (hangup,)),), _twiml(""))

    def _inbound_message(self, form: dict, now: datetime) -> WebhookResult:
        sid = required(form, "MessageSid", "twilio message")
        sender = required(form, "From", "twilio message")
        channel = "whatsapp" if sender.startswith(WHATSAPP_PREFIX) else "sms"
        contact = _phone(sender)
        number = _phone(form.get("To", "")) or None
        reference = Reference(
            kind="message", channel=channel, contact=contact, contacto_number=number
        )
        data: dict[str, Any] = {
            "channel": channel,
            "contact": contact,
            "customer": customer_for(contact, form.get("ProfileName")),
        }
        if number:
            data["contacto_number"] = number
        opening = ChannelEvent(event_id(NAME, sid, "created"), "conversation.created", now, data)
        message = ChannelEvent(
            event_id(NAME, sid, "message"),
            "media.message",
            now,
            {"message_id": sid, "sender": "customer", "text": form.get("Body", "")},
        )
        return WebhookResult((Inbound(reference, (message,), opening),), _twiml(""))

    def _message_status(self, form: dict, query: dict, now: datetime) -> WebhookResult:
        sid = required(form, "MessageSid", "twilio message status")
        status = _MESSAGE_STATUS.get(form["MessageStatus"])
        recipient = form.get("To", "")
        channel = "whatsapp" if recipient.startswith(WHATSAPP_PREFIX) else "sms"
        reference = Reference(
            kind="message",
            channel=channel,
            contact=_phone(recipient) or None,
            contacto_number=_phone(form.get("From", "")) or None,
        )
        if status is None:  # queued, accepted, sending, ...: nothing a view shows
            return WebhookResult((), _twiml(""))
        event = ChannelEvent(
            event_id(NAME, sid, "status", status),
            "media.message_status",
            _timestamp(form, now),
            {"message_id": query.get("message_id") or sid, "status": status},
        )
        return WebhookResult((Inbound(reference, (event,)),), _twiml(""))

    def _recording(self, form: dict, query: dict, now: datetime) -> WebhookResult:
        sid = required(form, "RecordingSid", "twilio recording")
        if form.get("RecordingStatus", "completed") != "completed":
            return WebhookResult((), _twiml(""))
        url = required(form, "RecordingUrl", "twilio recording")
        duration = seconds(form.get("RecordingDuration") or "0", "RecordingDuration", "twilio")
        call = query.get("ref") or required(form, "CallSid", "twilio recording")
        recording = Recording(sid, duration, "audio/wav", url=url + ".wav")
        event = ChannelEvent(
            event_id(NAME, sid, "ready"),
            "media.recording_ready",
            _timestamp(form, now),
            {"recording_id": sid, "duration_s": duration, "content_type": "audio/wav"},
        )
        reference = Reference(kind="call", channel="call", call_id=call)
        return WebhookResult((Inbound(reference, (event,), recording=recording),), _twiml(""))

    # ------------------------------------------------------------------ markup

    def hold_markup(self) -> Reply:
        return _twiml(
            "<Say>Thank you for calling. Please hold for the next available agent.</Say>"
            f'<Play loop="0">{escape(self.credentials.hold_music_url)}</Play>'
        )

    def dial_markup(self, number: str, caller_id: str, ref: str, leg: str) -> str:
        """<Dial> `number`, recording from answer, with callbacks naming `ref`."""
        recording_hook = with_query(self.webhook_url, ref=ref, leg="recording")
        number_attrs = ""
        dial_attrs = ""
        if leg == "customer":
            # Outbound: the customer's leg reports ringing, answer and its end.
            hook = with_query(self.webhook_url, ref=ref, leg="customer")
            number_attrs = (
                f' statusCallback={quoteattr(hook)} statusCallbackMethod="POST"'
                ' statusCallbackEvent="initiated ringing answered completed"'
            )
        else:
            # Inbound bridge: when the Dial ends, decide between hanging up and hold.
            hook = with_query(self.webhook_url, ref=ref, leg="bridge")
            dial_attrs = f' action={quoteattr(hook)} method="POST"'
        return (
            f'<Dial callerId={quoteattr(caller_id)} record="record-from-answer-dual"'
            f" recordingStatusCallback={quoteattr(recording_hook)}"
            f' recordingStatusCallbackEvent="completed"{dial_attrs}>'
            f"<Number{number_attrs}>{escape(number)}</Number></Dial>"
        )

    # ------------------------------------------------------------------ outbound

    def _api(self, path: str) -> str:
        return f"{self.api_base}/2010-04-01/Accounts/{self.credentials.account_sid}/{path}"

    @property
    def _auth(self) -> tuple[str, str]:
        return (self.credentials.account_sid, self.credentials.auth_token)

    async def place_call(self, call: OutboundCall) -> Placed:
        twiml = _twiml_text(
            self.dial_markup(call.contact, call.contacto_number, call.reference, "customer")
        )
        form = [
            ("To", call.agent_phone),
            ("From", call.contacto_number),
            ("Twiml", twiml),
            ("StatusCallback", with_query(self.webhook_url, ref=call.reference, leg="agent")),
            ("StatusCallbackMethod", "POST"),
        ] + [("StatusCallbackEvent", e) for e in ("initiated", "ringing", "answered", "completed")]
        body = await http_api.request_json(
            self.http, NAME, "POST", self._api("Calls.json"), form=form, auth=self._auth
        )
        sid = _sid(body)
        return Placed(sid, Reference(kind="call", channel="call", call_id=call.reference))

    async def send_message(self, message: OutboundMessage) -> Placed:
        prefix = WHATSAPP_PREFIX if message.channel == "whatsapp" else ""
        form = {
            "To": prefix + message.contact,
            "From": prefix + message.contacto_number,
            "Body": message.text,
            "StatusCallback": with_query(self.webhook_url, message_id=message.message_id),
        }
        body = await http_api.request_json(
            self.http, NAME, "POST", self._api("Messages.json"), form=form, auth=self._auth
        )
        reference = Reference(
            kind="message",
            channel=message.channel,
            contact=message.contact,
            contacto_number=message.contacto_number,
        )
        return Placed(_sid(body), reference)

    async def bridge(self, provider_call_id: str, agent_phone: str, contacto_number: str) -> None:
        twiml = _twiml_text(
            self.dial_markup(agent_phone, contacto_number, provider_call_id, "bridge")
        )
        await http_api.request_json(
            self.http,
            NAME,
            "POST",
            self._api(f"Calls/{provider_call_id}.json"),
            form={"Twiml": twiml},
            auth=self._auth,
        )

    async def hangup(self, provider_call_id: str) -> None:
        await http_api.request_json(
            self.http,
            NAME,
            "POST",
            self._api(f"Calls/{provider_call_id}.json"),
            form={"Status": "completed"},
            auth=self._auth,
        )

    async def download_recording(self, recording: Recording, destination: Path) -> None:
        if recording.url is None:
            raise PayloadError("twilio recording has no URL")
        await http_api.download(self.http, NAME, recording.url, destination, auth=self._auth)


def _outbound_leg_events(ref: str, leg: str, status: str, at: datetime) -> tuple:
    """A click-to-initiate call: Twilio rings the agent (leg `agent`) and, once they
    answer, dials the customer (leg `customer`)."""
    eid = event_id(NAME, ref, leg, status)
    if leg == "customer":
        if status == "ringing":
            return (ChannelEvent(eid, "media.ringing", at),)
        if status == "in-progress":
            return (ChannelEvent(eid, "media.answered", at),)
        if status == "completed":
            return (ChannelEvent(eid, "media.hangup", at, {"source": "customer"}),)
        if status in _NO_ANSWER_REASON:
            return (
                ChannelEvent(eid, "media.no_answer", at, {"reason": _NO_ANSWER_REASON[status]}),
            )
        if status == "canceled":  # the agent hung up while the customer's phone rang
            return (ChannelEvent(eid, "media.hangup", at, {"source": "agent"}),)
        return ()
    if leg == "agent":
        if status == "completed":
            return (ChannelEvent(eid, "media.hangup", at, {"source": "agent"}),)
        if status in ("busy", "no-answer", "failed", "canceled"):
            # The agent's own phone did not take the call: the customer was never
            # dialed, a fault rather than the customer's no-answer.
            return (ChannelEvent(eid, "media.no_answer", at, {"reason": "failed"}),)
        return ()
    raise PayloadError(f"twilio call: unknown leg {leg[:40]!r}")


def _timestamp(form: dict, now: datetime) -> datetime:
    """Twilio's `Timestamp` (RFC 2822) on status callbacks; else, or when it is out of
    bounds, the time of receipt."""
    raw = form.get("Timestamp")
    if raw:
        try:
            moment = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return now
        if moment.tzinfo is not None:
            try:
                return provider_time(moment, now)
            except OverflowError:  # an offset that leaves the range of datetime
                return now
    return now


def _phone(address: str) -> str:
    return address.removeprefix(WHATSAPP_PREFIX)


def _sid(body: Any) -> str:
    sid = body.get("sid") if isinstance(body, dict) else None
    if not isinstance(sid, str) or not sid:
        raise ProviderError("twilio answered without a sid")
    return sid


def _twiml_text(inner: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>'


def _twiml(inner: str) -> Reply:
    return Reply(200, TWIML, _twiml_text(inner).encode())
