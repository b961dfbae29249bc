"""WhatsApp Business Cloud API (Meta Graph API).

Verification request (GET with hub.mode, hub.verify_token, hub.challenge) and the
X-Hub-Signature-256 header: https://developers.facebook.com/docs/graph-api/webhooks/getting-started
Webhook payloads (messages, statuses):
https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/payload-examples
Sending a message: https://developers.facebook.com/docs/whatsapp/cloud-api/reference/messages

WhatsApp ids (`wa_id`) are E.164 numbers without the `+`; contacts here carry it.
The server's message id travels in `biz_opaque_callback_data`, which Meta echoes on
that message's status webhooks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
    same_secret,
)

NAME = "whatsapp_cloud"
API_BASE = "https://graph.facebook.com"
API_VERSION = "v21.0"
SIGNATURE_HEADER = "X-Hub-Signature-256"
_STATUSES = {"sent": "sent", "delivered": "delivered", "read": "read", "failed": "failed"}
_OK = Reply(200, "text/plain; charset=utf-8", b"ok")


@dataclass(frozen=True)
class WhatsAppCredentials:
    phone_number_id: str
    access_token: str = field(repr=False)
    app_secret: str = field(repr=False)
    verify_token: str = field(repr=False)

    @classmethod
    def from_dict(cls, values: Any) -> WhatsAppCredentials:
        return cls(
            phone_number_id=credential(values, "phone_number_id", NAME),
            access_token=credential(values, "access_token", NAME),
            app_secret=credential(values, "app_secret", NAME),
            verify_token=credential(values, "verify_token", NAME),
        )


def signature(app_secret: str, body: bytes) -> str:
    """X-Hub-Signature-256: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


class WhatsAppCloudProvider:
    name = NAME
    channels = frozenset({"whatsapp"})

    def __init__(
        self,
        credentials: WhatsAppCredentials,
        webhook_url: str,
        http: httpx.AsyncClient,
        api_base: str = API_BASE,
    ):
        self.credentials = credentials
        self.webhook_url = webhook_url
        self.http = http
        self.api_base = api_base.rstrip("/")

    def verify(self, request: WebhookRequest) -> None:
        given = request.header(SIGNATURE_HEADER)
        if not given:
            raise SignatureError("missing_signature", f"{SIGNATURE_HEADER} is missing")
        if not same_secret(signature(self.credentials.app_secret, request.body), given.strip()):
            raise SignatureError("bad_signature", f"{SIGNATURE_HEADER} does not match")

    def challenge(self, request: WebhookRequest) -> Reply | None:
        """The subscription handshake: echo hub.challenge when hub.verify_token is ours.
        A GET without hub.mode is not a handshake (None)."""
        if request.method.upper() != "GET":
            return None
        query = request.query()
        if "hub.mode" not in query:
            return None
        token = query.get("hub.verify_token", "")
        if query["hub.mode"] != "subscribe" or not token:
            raise SignatureError("missing_signature", "hub.mode=subscribe and hub.verify_token")
        if not same_secret(self.credentials.verify_token, token):
            raise SignatureError("bad_signature", "hub.verify_token does not match")
        challenge = query.get("hub.challenge", "")
        return Reply(200, "text/plain; charset=utf-8", challenge.encode())

    def parse(self, request: WebhookRequest, now: datetime) -> WebhookResult:
        try:
            payload = json.loads(request.body)
        except (UnicodeDecodeError, ValueError):
            raise PayloadError("whatsapp webhook: the body is not JSON") from None
        if not isinstance(payload, dict) or payload.get("object") != "whatsapp_business_account":
            raise PayloadError("whatsapp webhook: object is not whatsapp_business_account")
        items: list[Inbound] = []
        for entry in _list(payload, "entry"):
            for change in _list(entry, "changes"):
                value = change.get("value") if isinstance(change, dict) else None
                if not isinstance(value, dict) or change.get("field") != "messages":
                    continue
                items.extend(_messages(value, now))
                items.extend(_statuses(value, now))
        return WebhookResult(tuple(items), _OK)

    def hold_markup(self) -> Reply:
        raise ProviderError("whatsapp_cloud carries no calls")

    async def place_call(self, call: OutboundCall) -> Placed:
        raise ProviderError("whatsapp_cloud carries no calls")

    async def send_message(self, message: OutboundMessage) -> Placed:
        body = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": message.contact.lstrip("+"),
            "type": "text",
            "text": {"preview_url": False, "body": message.text},
            "biz_opaque_callback_data": message.message_id,
        }
        url = f"{self.api_base}/{API_VERSION}/{self.credentials.phone_number_id}/messages"
        answer = await http_api.request_json(
            self.http,
            NAME,
            "POST",
            url,
            json=body,
            headers={"Authorization": f"Bearer {self.credentials.access_token}"},
        )
        messages = answer.get("messages") if isinstance(answer, dict) else None
        if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
            raise ProviderError("whatsapp_cloud answered without messages[0].id")
        wamid = messages[0].get("id")
        if not isinstance(wamid, str) or not wamid:
            raise ProviderError("whatsapp_cloud answered without messages[0].id")
        reference = Reference(
            kind="message",
            channel="whatsapp",
            contact=message.contact,
            contacto_number=message.contacto_number,
        )
        return Placed(wamid, reference)

    async def bridge(self, provider_call_id: str, agent_phone: str, contacto_number: str) -> None:
        raise ProviderError("whatsapp_cloud carries no calls")

    async def hangup(self, provider_call_id: str) -> None:
        raise ProviderError("whatsapp_cloud carries no calls")

    async def download_recording(self, recording: Recording, destination: Path) -> None:
        raise ProviderError("whatsapp_cloud has no recordings")


def _messages(value: dict, now: datetime) -> list[Inbound]:
    metadata = value.get("metadata") if isinstance(value.get("metadata"), dict) else {}
    number = metadata.get("display_phone_number")
    number = _plus(number) if isinstance(number, str) and number else None
    names = {}
    for contact in _list(value, "contacts"):
        profile = contact.get("profile") if isinstance(contact, dict) else None
        if isinstance(profile, dict) and isinstance(contact.get("wa_id"), str):
            names[contact["wa_id"]] = profile.get("name")
    items = []
    for message in _list(value, "messages"):
        if not isinstance(message, dict):
            raise PayloadError("whatsapp webhook: a message is not an object")
        wamid = message.get("id")
        sender = message.get("from")
        if not isinstance(wamid, str) or not wamid or not isinstance(sender, str) or not sender:
            raise PayloadError("whatsapp webhook: a message lacks id or from")
        contact = _plus(sender)
        at = _unix(message.get("timestamp"), now)
        data: dict[str, Any] = {
            "channel": "whatsapp",
            "contact": contact,
            "customer": customer_for(contact, _name(names.get(sender))),
        }
        if number:
            data["contacto_number"] = number
        opening = ChannelEvent(event_id(NAME, wamid, "created"), "conversation.created", at, data)
        event = ChannelEvent(
            event_id(NAME, wamid, "message"),
            "media.message",
            at,
            {"message_id": wamid, "sender": "customer", "text": _text(message)},
        )
        reference = Reference(
            kind="message", channel="whatsapp", contact=contact, contacto_number=number
        )
        items.append(Inbound(reference, (event,), opening))
    return items


def _statuses(value: dict, now: datetime) -> list[Inbound]:
    items = []
    for status in _list(value, "statuses"):
        if not isinstance(status, dict):
            raise PayloadError("whatsapp webhook: a status is not an object")
        wamid = status.get("id")
        if not isinstance(wamid, str) or not wamid:
            raise PayloadError("whatsapp webhook: a status lacks id")
        ours = _STATUSES.get(status.get("status"))
        if ours is None:
            continue  # e.g. `deleted`: nothing a view shows
        recipient = status.get("recipient_id")
        contact = _plus(recipient) if isinstance(recipient, str) and recipient else None
        message_id = status.get("biz_opaque_callback_data") or wamid
        event = ChannelEvent(
            event_id(NAME, wamid, "status", ours),
            "media.message_status",
            _unix(status.get("timestamp"), now),
            {"message_id": str(message_id), "status": ours},
        )
        items.append(
            Inbound(Reference(kind="message", channel="whatsapp", contact=contact), (event,))
        )
    return items


def _text(message: dict) -> str:
    kind = message.get("type")
    body = message.get(kind) if isinstance(kind, str) else None
    if kind == "text" and isinstance(body, dict) and isinstance(body.get("body"), str):
        return body["body"]
    if isinstance(body, dict) and isinstance(body.get("caption"), str):
        return f"[{kind}] {body['caption']}"
    return f"[{kind or 'message'}]"  # media, location, ...: shown as its kind


def _list(container: Any, key: str) -> list:
    value = container.get(key) if isinstance(container, dict) else None
    if value is None:
        return []
    if not isinstance(value, list):
        raise PayloadError(f"whatsapp webhook: {key} is not a list")
    return value


def _plus(wa_id: str) -> str:
    return wa_id if wa_id.startswith("+") else "+" + wa_id


def _name(name: Any) -> str | None:
    return name if isinstance(name, str) and name else None


def _unix(raw: Any, now: datetime) -> datetime:
    try:
        return provider_time(datetime.fromtimestamp(int(raw), UTC), now)
    except (TypeError, ValueError, OverflowError, OSError):
        return now
