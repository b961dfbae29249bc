"""Plivo Voice and Messaging.

Every parameter name read or sent here, with the source that confirms it (and the
few no source confirms), is listed in docs/channels.md, "Plivo: parameter names".

Signatures (V3, with nonce): https://docs.plivo.com/docs/voice/xml/request/validation
(the algorithm is that of Plivo's SDKs, plivo-python's plivo/utils/signature_v3.py)
Voice request parameters: https://docs.plivo.com/docs/voice/xml/request
Dial action parameters: https://docs.plivo.com/docs/voice/use-cases/dial-status-reporting
Hangup causes and sources: https://docs.plivo.com/docs/voice/troubleshooting/hangup-causes
Make a call: https://docs.plivo.com/docs/voice/api/call/make-a-call
Transfer and hang up a call: plivo-python's plivo/resources/calls.py (Calls.update, delete)
Send a message: https://www.plivo.com/docs/messaging/api/messages

Plivo retries a callback it could not deliver; event ids come from its call and
message UUIDs, so a retry is a `duplicate`. Callback URLs carry `ref` and `leg` in
their query (signed, as the signature covers the URL).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit
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
    required,
    same_secret,
    seconds,
    with_query,
)

NAME = "plivo"
API_BASE = "https://api.plivo.com"
DEFAULT_HOLD_MUSIC = "https://s3.amazonaws.com/plivocloud/music.mp3"
SIGNATURE_HEADER = "X-Plivo-Signature-V3"
MAIN_ACCOUNT_SIGNATURE_HEADER = "X-Plivo-Signature-Ma-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
XML = "application/xml; charset=utf-8"

# CallStatus values (docs/voice/use-cases/dial-status-reporting and account/api/application):
# ringing, in-progress, completed, busy, failed, timeout, no-answer, cancel. `canceled` is
# in no Plivo source; it is accepted only so that spelling cannot leave a call open.
_ENDED = frozenset({"completed", "busy", "failed", "timeout", "no-answer", "cancel", "canceled"})
_NOT_ANSWERED = frozenset(_ENDED - {"completed"})
# DialStatus of a <Dial> action, as documented: completed, busy, failed, timeout, no-answer.
# `cancel`/`canceled` are not documented for DialStatus (see _dial_callback).
_DIAL_NO_ANSWER = {
    "busy": "busy",
    "no-answer": "no_answer",
    "timeout": "no_answer",
    "failed": "failed",
}
END_OF_XML = "4010"  # hangup cause "End Of XML Instructions"
# HangupSource values (docs/voice/troubleshooting/hangup-causes).
SOURCE_CALLER = "Caller"
SOURCE_API = "API Request"
SOURCE_HANGUP_XML = "Answer XML"  # the call ran our <Hangup/>
_MESSAGE_STATUS = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "failed": "failed",
    "undelivered": "failed",
    "rejected": "failed",
}


@dataclass(frozen=True)
class PlivoCredentials:
    auth_id: str
    auth_token: str = field(repr=False)
    hold_music_url: str = DEFAULT_HOLD_MUSIC

    @classmethod
    def from_dict(cls, values: Any) -> PlivoCredentials:
        return cls(
            auth_id=credential(values, "auth_id", NAME),
            auth_token=credential(values, "auth_token", NAME),
            hold_music_url=credential(values, "hold_music_url", NAME, optional=True)
            or DEFAULT_HOLD_MUSIC,
        )


def _sorted_query(pairs: list[tuple[str, str]]) -> str:
    keys = sorted({k for k, _ in pairs})
    return "&".join(f"{k}={v}" for k in keys for v in sorted(v for kk, v in pairs if kk == k))


def _sorted_params(pairs: list[tuple[str, str]]) -> str:
    keys = sorted({k for k, _ in pairs})
    return "".join(f"{k}{v}" for k in keys for v in sorted(v for kk, v in pairs if kk == k))


def signature_v3(
    auth_token: str, method: str, url: str, params: list[tuple[str, str]], nonce: str
) -> str:
    """X-Plivo-Signature-V3: base64 HMAC-SHA256 of `<base URL>.<nonce>`.

    The base URL is the URL without its query, then for GET `?` and the query merged
    with the parameters, sorted, as `k=v&k=v`; for POST `?` and the URL's own sorted
    query, a `.` when that query is not empty, then each POST parameter as `kv`, sorted.
    """
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = parse_qsl(parts.query, keep_blank_values=True)
    if method.upper() == "GET" or not params:
        merged = _sorted_query(query + (params if method.upper() == "GET" else []))
        signed = base + ("?" + merged if merged else "")
    else:
        own = _sorted_query(query)
        signed = base + "?" + own + ("." if own else "") + _sorted_params(params)
    digest = hmac.new(auth_token.encode(), f"{signed}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class PlivoProvider:
    name = NAME
    channels = frozenset({"call", "sms"})

    def __init__(
        self,
        credentials: PlivoCredentials,
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
        given = request.header(SIGNATURE_HEADER) or request.header(MAIN_ACCOUNT_SIGNATURE_HEADER)
        nonce = request.header(NONCE_HEADER)
        if not given or not nonce:
            raise SignatureError(
                "missing_signature", f"{SIGNATURE_HEADER} and {NONCE_HEADER} are required"
            )
        params = request.form_pairs() if request.method.upper() == "POST" else []
        expected = signature_v3(
            self.credentials.auth_token, request.method, request.url, params, nonce
        )
        # The header may list several signatures, one per token Plivo signed with.
        if not any(same_secret(expected, s.strip()) for s in given.split(",")):
            raise SignatureError("bad_signature", f"{SIGNATURE_HEADER} does not match")

    def challenge(self, request: WebhookRequest) -> Reply | None:
        return None

    def parse(self, request: WebhookRequest, now: datetime) -> WebhookResult:
        form = request.form() if request.method.upper() == "POST" else request.query()
        query = request.query()
        leg = query.get("leg")
        if "RecordUrl" in form:
            return self._recording(form, query, now)
        if "MessageUUID" in form:
            if "Status" in form and "Text" not in form:
                return self._message_status(form, query, now)
            return self._inbound_message(form, now)
        if leg == "bridge":
            return self._bridge_request(query)
        if "DialStatus" in form or "DialAction" in form or "DialBLegStatus" in form:
            return self._dial_callback(form, query, now)
        if "CallUUID" in form:
            return self._call(form, query, now)
        raise PayloadError("plivo webhook: neither CallUUID, MessageUUID nor RecordUrl")

    def _call(self, form: dict, query: dict, now: datetime) -> WebhookResult:
        call_uuid = required(form, "CallUUID", "plivo call")
        status = required(form, "CallStatus", "plivo call")
        ref = query.get("ref")
        leg = query.get("leg")
        if ref is None:
            return self._inbound_call(form, call_uuid, status, now)
        reference = Reference(kind="call", channel="call", call_id=ref)
        if leg == "connect":
            # The agent answered the outbound call: dial the customer now.
            contact = required(query, "contact", "plivo connect")
            caller = required(query, "caller", "plivo connect")
            ringing = ChannelEvent(event_id(NAME, ref, "customer", "ringing"), "media.ringing", now)
            markup = self.dial_markup(contact, caller, ref, "customer")
            return WebhookResult((Inbound(reference, (ringing,)),), _xml(markup))
        if leg != "agent":
            raise PayloadError(f"plivo call: unknown leg {str(leg)[:40]!r}")
        eid = event_id(NAME, ref, "agent", status)
        events: tuple[ChannelEvent, ...] = ()
        if status in _NOT_ANSWERED:
            events = (ChannelEvent(eid, "media.no_answer", now, {"reason": "failed"}),)
        elif status == "completed" and not _ended_by_our_xml(form):
            events = (ChannelEvent(eid, "media.hangup", now, {"source": "agent"}),)
        return WebhookResult((Inbound(reference, events),), _xml(""))

    def _inbound_call(self, form: dict, call_uuid: str, status: str, now: datetime):
        contact = required(form, "From", "plivo call")
        contact = contact if contact.startswith("+") else "+" + contact
        number = form.get("To") or None
        if number and not number.startswith("+"):
            number = "+" + number
        reference = Reference(
            kind="call", channel="call", call_id=call_uuid, contact=contact, contacto_number=number
        )
        if status not in _ENDED:
            data: dict[str, Any] = {
                "channel": "call",
                "contact": contact,
                "customer": customer_for(contact, form.get("CallerName")),
            }
            if number:
                data["contacto_number"] = number
            opening = ChannelEvent(
                event_id(NAME, call_uuid, "created"), "conversation.created", now, data
            )
            return WebhookResult((Inbound(reference, opening=opening),), self.hold_markup())
        hangup = ChannelEvent(
            event_id(NAME, call_uuid, "hangup"),
            "media.hangup",
            now,
            {"source": _inbound_hangup_source(form)},
        )
        return WebhookResult((Inbound(reference, (hangup,)),), _xml(""))

    def _bridge_request(self, query: dict) -> WebhookResult:
        # Our transfer of a held caller fetches this: dial the accepting agent.
        ref = required(query, "ref", "plivo bridge")
        agent = required(query, "agent", "plivo bridge")
        caller = required(query, "caller", "plivo bridge")
        return WebhookResult((), _xml(self.dial_markup(agent, caller, ref, "bridge")))

    def _dial_callback(self, form: dict, query: dict, now: datetime) -> WebhookResult:
        ref = required(query, "ref", "plivo dial")
        leg = query.get("leg")
        reference = Reference(kind="call", channel="call", call_id=ref)
        if leg == "bridge_result":
            done = form.get("DialStatus") == "completed"
            reply = _xml("<Hangup/>") if done else self.hold_markup()
            return WebhookResult((), reply)
        if leg != "customer":
            raise PayloadError(f"plivo dial: unknown leg {str(leg)[:40]!r}")
        if "DialStatus" not in form:
            # Not the <Dial> action (which alone documents DialStatus) but its callbackUrl:
            # DialAction answer, connected, hangup or digits. Plivo's open-source server
            # (plivoframework) sends only DialBLegStatus answer/hangup there.
            action = form.get("DialAction") or form.get("DialBLegStatus")
            if action == "answer":
                answered = ChannelEvent(
                    event_id(NAME, ref, "customer", "answer"), "media.answered", now
                )
                return WebhookResult((Inbound(reference, (answered,)),), _xml(""))
            return WebhookResult((), _xml(""))
        status = form["DialStatus"]
        eid = event_id(NAME, ref, "customer", status)
        if status == "completed":
            event = ChannelEvent(eid, "media.hangup", now, {"source": "customer"})
        elif status in _DIAL_NO_ANSWER:
            event = ChannelEvent(eid, "media.no_answer", now, {"reason": _DIAL_NO_ANSWER[status]})
        elif status in ("cancel", "canceled"):  # undocumented for DialStatus; see above
            event = ChannelEvent(eid, "media.hangup", now, {"source": "agent"})
        else:
            raise PayloadError(f"plivo dial: unknown DialStatus {status[:40]!r}")
        return WebhookResult((Inbound(reference, (event,)),), _xml("<Hangup/>"))

    def _inbound_message(self, form: dict, now: datetime) -> WebhookResult:
        uuid = required(form, "MessageUUID", "plivo message")
        contact = required(form, "From", "plivo message")
        contact = contact if contact.startswith("+") else "+" + contact
        number = form.get("To") or None
        if number and not number.startswith("+"):
            number = "+" + number
        reference = Reference(
            kind="message", channel="sms", contact=contact, contacto_number=number
        )
        data: dict[str, Any] = {
            "channel": "sms",
            "contact": contact,
            "customer": customer_for(contact),
        }
        if number:
            data["contacto_number"] = number
        opening = ChannelEvent(event_id(NAME, uuid, "created"), "conversation.created", now, data)
        message = ChannelEvent(
            event_id(NAME, uuid, "message"),
            "media.message",
            now,
            {"message_id": uuid, "sender": "customer", "text": form.get("Text", "")},
        )
        return WebhookResult((Inbound(reference, (message,), opening),), _xml(""))

    def _message_status(self, form: dict, query: dict, now: datetime) -> WebhookResult:
        uuid = required(form, "MessageUUID", "plivo message status")
        status = _MESSAGE_STATUS.get(form["Status"])
        contact = form.get("To") or None
        if contact and not contact.startswith("+"):
            contact = "+" + contact
        reference = Reference(kind="message", channel="sms", contact=contact)
        if status is None:
            return WebhookResult((), _xml(""))
        event = ChannelEvent(
            event_id(NAME, uuid, "status", status),
            "media.message_status",
            now,
            {"message_id": query.get("message_id") or uuid, "status": status},
        )
        return WebhookResult((Inbound(reference, (event,)),), _xml(""))

    def _recording(self, form: dict, query: dict, now: datetime) -> WebhookResult:
        recording_id = required(form, "RecordingID", "plivo recording")
        url = required(form, "RecordUrl", "plivo recording")
        if form.get("RecordingDurationMs"):
            duration = seconds(form["RecordingDurationMs"], "RecordingDurationMs", "plivo") / 1000
        else:
            duration = seconds(form.get("RecordingDuration") or "0", "RecordingDuration", "plivo")
        call = query.get("ref") or required(form, "CallUUID", "plivo recording")
        event = ChannelEvent(
            event_id(NAME, recording_id, "ready"),
            "media.recording_ready",
            now,
            {"recording_id": recording_id, "duration_s": duration, "content_type": "audio/wav"},
        )
        recording = Recording(recording_id, duration, "audio/wav", url=url)
        reference = Reference(kind="call", channel="call", call_id=call)
        return WebhookResult((Inbound(reference, (event,), recording=recording),), _xml(""))

    # ------------------------------------------------------------------ markup

    def hold_markup(self) -> Reply:
        return _xml(
            "<Speak>Thank you for calling. Please hold for the next available agent.</Speak>"
            f'<Play loop="0">{escape(self.credentials.hold_music_url)}</Play>'
        )

    def dial_markup(self, number: str, caller_id: str, ref: str, leg: str) -> str:
        """Record from answer, then <Dial> `number`; `leg` is `customer` (outbound) or
        `bridge` (an inbound caller to the agent)."""
        recording_hook = with_query(self.webhook_url, ref=ref, leg="recording")
        if leg == "customer":
            hook = with_query(self.webhook_url, ref=ref, leg="customer")
            dial_attrs = (
                f' action={quoteattr(hook)} method="POST"'
                f' callbackUrl={quoteattr(hook)} callbackMethod="POST"'
            )
        else:
            hook = with_query(self.webhook_url, ref=ref, leg="bridge_result")
            dial_attrs = f' action={quoteattr(hook)} method="POST"'
        return (
            '<Record recordSession="true" startOnDialAnswer="true" redirect="false"'
            f' fileFormat="wav" callbackUrl={quoteattr(recording_hook)} callbackMethod="POST"/>'
            f"<Dial callerId={quoteattr(caller_id)}{dial_attrs}>"
            f"<Number>{escape(number.lstrip('+'))}</Number></Dial>"
        )

    # ------------------------------------------------------------------ outbound

    def _api(self, path: str) -> str:
        return f"{self.api_base}/v1/Account/{self.credentials.auth_id}/{path}"

    @property
    def _auth(self) -> tuple[str, str]:
        return (self.credentials.auth_id, self.credentials.auth_token)

    async def place_call(self, call: OutboundCall) -> Placed:
        ref = call.reference
        body = {
            "from": call.contacto_number.lstrip("+"),
            "to": call.agent_phone.lstrip("+"),
            "answer_url": with_query(
                self.webhook_url,
                ref=ref,
                leg="connect",
                contact=call.contact,
                caller=call.contacto_number,
            ),
            "answer_method": "POST",
            "ring_url": with_query(self.webhook_url, ref=ref, leg="agent"),
            "ring_method": "POST",
            "hangup_url": with_query(self.webhook_url, ref=ref, leg="agent"),
            "hangup_method": "POST",
        }
        answer = await http_api.request_json(
            self.http, NAME, "POST", self._api("Call/"), json=body, auth=self._auth
        )
        uuid = answer.get("request_uuid") if isinstance(answer, dict) else None
        if isinstance(uuid, list):
            uuid = uuid[0] if uuid else None
        if not isinstance(uuid, str) or not uuid:
            raise ProviderError("plivo answered without a request_uuid")
        return Placed(uuid, Reference(kind="call", channel="call", call_id=ref))

    async def send_message(self, message: OutboundMessage) -> Placed:
        body = {
            "src": message.contacto_number.lstrip("+"),
            "dst": message.contact.lstrip("+"),
            "text": message.text,
            "url": with_query(self.webhook_url, message_id=message.message_id),
            "method": "POST",
        }
        answer = await http_api.request_json(
            self.http, NAME, "POST", self._api("Message/"), json=body, auth=self._auth
        )
        uuids = answer.get("message_uuid") if isinstance(answer, dict) else None
        if not isinstance(uuids, list) or not uuids or not isinstance(uuids[0], str):
            raise ProviderError("plivo answered without a message_uuid")
        reference = Reference(
            kind="message",
            channel=message.channel,
            contact=message.contact,
            contacto_number=message.contacto_number,
        )
        return Placed(uuids[0], reference)

    async def bridge(self, provider_call_id: str, agent_phone: str, contacto_number: str) -> None:
        # Plivo's transfer takes a URL, not markup: ours answers it with the <Dial>.
        url = with_query(
            self.webhook_url,
            ref=provider_call_id,
            leg="bridge",
            agent=agent_phone,
            caller=contacto_number,
        )
        await http_api.request_json(
            self.http,
            NAME,
            "POST",
            self._api(f"Call/{provider_call_id}/"),
            json={"legs": "aleg", "aleg_url": url, "aleg_method": "POST"},
            auth=self._auth,
        )

    async def hangup(self, provider_call_id: str) -> None:
        await http_api.request_json(
            self.http, NAME, "DELETE", self._api(f"Call/{provider_call_id}/"), auth=self._auth
        )

    async def download_recording(self, recording: Recording, destination: Path) -> None:
        if recording.url is None:
            raise PayloadError("plivo recording has no URL")
        await http_api.download(self.http, NAME, recording.url, destination, auth=self._auth)


def _inbound_hangup_source(form: dict) -> str:
    """Who ended an inbound call, from Plivo's HangupSource and HangupCauseCode."""
    source = form.get("HangupSource", "")
    if source == SOURCE_CALLER:
        return "customer"
    if source == SOURCE_API:
        return "agent"  # our own hangup, for an agent
    if _ended_by_our_xml(form):
        # An inbound call's XML ends (or runs our <Hangup/>) only after the bridge's <Dial>
        # to the agent has completed.
        return "agent"
    return "system"


def _ended_by_our_xml(form: dict) -> bool:
    """The call ended because its XML did: our <Hangup/> after a <Dial> action (source
    "Answer XML") or no instruction left (cause 4010, "End Of XML Instructions")."""
    return (
        form.get("HangupSource") == SOURCE_HANGUP_XML or form.get("HangupCauseCode") == END_OF_XML
    )


def _xml(inner: str) -> Reply:
    text = f'<?xml version="1.0" encoding="UTF-8"?><Response>{inner}</Response>'
    return Reply(200, XML, text.encode())
