"""What every provider adapter offers the server, and the shapes they share.

An adapter only translates. Inbound: check a webhook's signature (`verify`), turn its
payload into the state machine's events (`parse`), named by the provider's own reference. The
server's webhook layer maps each reference to a conversation and ingests the events.
Outbound: place a call or send a message through the provider's REST API, and the
call-control markup that holds a caller and bridges them to an agent's phone.

Event ids are derived from the provider's ids and the thing reported, never from the
time of delivery, so a provider's retry of a callback is a `duplicate`.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from state_machine import in_bounds

Channel = Literal["call", "sms", "whatsapp"]

EVENT_ID_MAX_LENGTH = 200  # state_machine's limit on event_id


class ChannelError(Exception):
    """Base of the errors an adapter raises; `code` is machine-readable."""

    code = "channel_error"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SignatureError(ChannelError):
    """The webhook is not from the provider: answer 401 (missing) or 403 (bad)."""

    def __init__(self, code: Literal["missing_signature", "bad_signature"], message: str):
        super().__init__(message)
        self.code = code
        self.status = 401 if code == "missing_signature" else 403


class PayloadError(ChannelError):
    """A signed webhook whose payload this adapter cannot read: answer 400."""

    code = "invalid_payload"
    status = 400


class CredentialsError(ChannelError):
    """Credentials for PUT /api/v1/providers/{provider} lack or mistype a field: 422."""

    code = "invalid_credentials"
    status = 422


class ProviderError(ChannelError):
    """The provider's API refused or did not answer.

    `safe_to_retry` is true only when the request certainly never reached the provider
    (it could not connect), so a retry cannot place a second call or message.
    """

    code = "provider_error"

    def __init__(self, message: str, *, status: int | None = None, safe_to_retry: bool = False):
        super().__init__(message)
        self.status = status
        self.safe_to_retry = safe_to_retry


# --------------------------------------------------------------------------- inbound


@dataclass(frozen=True)
class WebhookRequest:
    """One webhook as the provider sent it. `url` is the full URL the provider called
    (scheme, host, path and query), since Twilio and Plivo sign it."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.url).query, keep_blank_values=True))

    def form(self) -> dict[str, str]:
        """The url-encoded body (Twilio, Plivo); the last value wins for a repeated key."""
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("the body is not UTF-8 url-encoded form data") from None
        return dict(parse_qsl(text, keep_blank_values=True))

    def form_pairs(self) -> list[tuple[str, str]]:
        try:
            text = self.body.decode("utf-8")
        except UnicodeDecodeError:
            raise PayloadError("the body is not UTF-8 url-encoded form data") from None
        return parse_qsl(text, keep_blank_values=True)


@dataclass(frozen=True)
class Reference:
    """What the provider calls the contact: a call id, or for messages the contact and
    channel. `contacto_number` is our number it came in on (routes to a team)."""

    kind: Literal["call", "message"]
    channel: Channel
    call_id: str | None = None
    contact: str | None = None
    contacto_number: str | None = None


@dataclass(frozen=True)
class ChannelEvent:
    """A state machine event without its conversation, which the webhook layer chooses."""

    event_id: str
    type: str
    occurred_at: datetime
    data: dict[str, Any] = field(default_factory=dict)

    def envelope(self, conversation_id: str) -> dict[str, Any]:
        """The event exactly as POST /api/v1/events and ingest accept it."""
        return {
            "event_id": self.event_id,
            "type": self.type,
            "conversation_id": conversation_id,
            "occurred_at": rfc3339(self.occurred_at),
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class Recording:
    """A finished recording at the provider (`url`) or on local disk (`path`, sandbox).
    The server fetches it with the adapter's `download_recording`."""

    recording_id: str
    duration_s: float
    content_type: str
    url: str | None = None
    path: Path | None = None


@dataclass(frozen=True)
class Inbound:
    """What one webhook says about one contact.

    `opening` is the `conversation.created` to use when the reference has no open
    conversation (and only then); `events` apply in order to the mapped conversation.
    """

    reference: Reference
    events: tuple[ChannelEvent, ...] = ()
    opening: ChannelEvent | None = None
    recording: Recording | None = None


@dataclass(frozen=True)
class Reply:
    """The HTTP answer to give the provider (call-control markup, or a plain ack)."""

    status: int = 200
    content_type: str = "text/plain; charset=utf-8"
    body: bytes = b""


@dataclass(frozen=True)
class WebhookResult:
    items: tuple[Inbound, ...]
    reply: Reply


# --------------------------------------------------------------------------- outbound


@dataclass(frozen=True)
class OutboundCall:
    """Click-to-initiate on `call`: the provider rings `agent_phone` first and, once the
    agent answers, dials `contact` from `contacto_number`. `reference` is the server's
    own id for this call; every callback about it names it."""

    reference: str
    contact: str
    contacto_number: str
    agent_phone: str


@dataclass(frozen=True)
class OutboundMessage:
    """A message to send. `message_id` is the server's id of it in the transcript; the
    delivery statuses that come back name it."""

    channel: Channel
    contact: str
    contacto_number: str
    text: str
    message_id: str


@dataclass(frozen=True)
class Placed:
    """The provider accepted a call or message: its own id for it."""

    provider_id: str
    reference: Reference


class Provider(Protocol):
    """One provider account of one tenant (built by channels.registry.build)."""

    name: str
    channels: frozenset[str]

    def verify(self, request: WebhookRequest) -> None:
        """Raise SignatureError unless the request is signed by the provider."""

    def challenge(self, request: WebhookRequest) -> Reply | None:
        """Answer a GET verification handshake, or None when the request is not one."""

    def parse(self, request: WebhookRequest, now: datetime) -> WebhookResult:
        """Translate a verified webhook; raise PayloadError when it cannot be read."""

    def hold_markup(self) -> Reply:
        """Answer a caller and keep them on hold until an agent is bridged."""

    async def place_call(self, call: OutboundCall) -> Placed: ...

    async def send_message(self, message: OutboundMessage) -> Placed: ...

    async def bridge(self, provider_call_id: str, agent_phone: str, contacto_number: str) -> None:
        """Connect a held inbound caller to the accepting agent's phone."""

    async def hangup(self, provider_call_id: str) -> None: ...

    async def download_recording(self, recording: Recording, destination: Path) -> None: ...


# --------------------------------------------------------------------------- helpers


def event_id(provider: str, *parts: str) -> str:
    """A stable event id from the provider's ids; hashed when it would be too long."""
    text = ":".join((provider, *parts))
    if len(text) <= EVENT_ID_MAX_LENGTH:
        return text
    return f"{provider}:h:{hashlib.sha256(text.encode()).hexdigest()}"


def rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError("instants carry a time zone")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def provider_time(moment: datetime, now: datetime) -> datetime:
    """A provider's timestamp, or the time of receipt `now` when it lies outside the
    bounds of time ingest accepts (docs/domain.md "Bounded time")."""
    return moment if in_bounds(moment, now) else now


def same_secret(expected: str | bytes, given: str | bytes) -> bool:
    """Constant-time comparison, so a signature cannot be guessed byte by byte."""
    a = expected.encode() if isinstance(expected, str) else expected
    b = given.encode() if isinstance(given, str) else given
    return hmac.compare_digest(a, b)


def with_query(url: str, **params: str) -> str:
    """`url` with params added to its query (existing ones kept, in order)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def required(values: Mapping[str, Any], name: str, where: str) -> str:
    value = values.get(name)
    if not isinstance(value, str) or not value:
        raise PayloadError(f"{where}: {name} is missing")
    return value


def seconds(raw: Any, field_name: str, where: str) -> float:
    """A non-negative, finite number of seconds from a provider's string."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise PayloadError(f"{where}: {field_name} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise PayloadError(f"{where}: {field_name} must be a finite number, not negative")
    return value


def customer_for(contact: str, name: str | None = None) -> dict[str, str]:
    """The `customer` of conversation.created for a phone contact."""
    return {"name": name or contact, "phone": contact}


def credential(values: Any, name: str, provider: str, optional: bool = False) -> str | None:
    """One credential field: a non-empty string. The error names the field, never its
    value (credentials are never logged)."""
    if not isinstance(values, Mapping):
        raise CredentialsError(f"{provider} credentials must be an object")
    value = values.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CredentialsError(f"{provider} credentials need {name} (a non-empty string)")
    return value.strip()
