"""Events as frozen dataclasses, and the parser that builds them from an envelope.

Each event type is a dataclass whose annotations are its schema: the parser reads
them to check `data`, so adding a field to an event is one line here.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

Channel = Literal["call", "chat", "sms", "whatsapp"]
Sender = Literal["customer", "agent", "system"]
HangupSource = Literal["customer", "agent", "system"]

ID_MAX_LENGTH = 200
# docs/domain.md "Reachable ids": a conversation must be reachable at its URL, so its id
# is 1-200 characters that need no escaping in a path segment.
CONVERSATION_ID = re.compile(rf"[A-Za-z0-9._~:@+=-]{{1,{ID_MAX_LENGTH}}}")
CONVERSATION_ID_CHARACTERS = "A-Z a-z 0-9 . _ ~ : @ + = -"
# docs/domain.md "Bounded time": an event's occurred_at lies from EARLIEST to AHEAD after
# the server's clock. The machine has no clock: whoever parses with one passes `now`.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
AHEAD = timedelta(hours=24)
RFC3339 = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})[Tt ](?P<time>\d{2}:\d{2}:\d{2})(?P<fraction>\.\d+)?"
    r"(?P<offset>[Zz]|[+-]\d{2}:\d{2})$"
)


class InvalidEvent(Exception):
    """An envelope or its data does not describe a valid event."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(frozen=True)
class Customer:
    name: str
    id: str | None = None
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True, kw_only=True)
class Event:
    """The envelope every event carries. `type` is the class's wire name."""

    type: ClassVar[str]
    event_id: str
    conversation_id: str
    occurred_at: datetime


EVENT_TYPES: dict[str, type[Event]] = {}


def event_type(name: str):
    def register(cls: type[Event]) -> type[Event]:
        cls.type = name
        EVENT_TYPES[name] = cls
        return cls

    return register


@event_type("conversation.created")
@dataclass(frozen=True, kw_only=True)
class ConversationCreated(Event):
    channel: Channel
    contact: str
    customer: Customer
    contacto_number: str | None = None
    team: str | None = None


@event_type("conversation.initiated")
@dataclass(frozen=True, kw_only=True)
class ConversationInitiated(Event):
    channel: Channel
    contact: str
    agent_id: str
    contacto_number: str | None = None
    customer: Customer | None = None
    text: str | None = None


@event_type("routing.out_of_hours")
@dataclass(frozen=True, kw_only=True)
class OutOfHours(Event):
    team: str


@event_type("routing.enqueued")
@dataclass(frozen=True, kw_only=True)
class Enqueued(Event):
    team: str


@event_type("routing.enqueue_failed")
@dataclass(frozen=True, kw_only=True)
class EnqueueFailed(Event):
    team: str
    reason: str


@event_type("routing.assignment_failed")
@dataclass(frozen=True, kw_only=True)
class AssignmentFailed(Event):
    reason: str


@event_type("routing.offered")
@dataclass(frozen=True, kw_only=True)
class Offered(Event):
    agent_id: str
    offer_id: str
    expires_at: datetime


@event_type("routing.offer_declined")
@dataclass(frozen=True, kw_only=True)
class OfferDeclined(Event):
    agent_id: str
    offer_id: str
    reason: Literal["rejected", "expired"]


@event_type("agent.accepted")
@dataclass(frozen=True, kw_only=True)
class Accepted(Event):
    agent_id: str
    offer_id: str


@event_type("routing.queue_timeout")
@dataclass(frozen=True, kw_only=True)
class QueueTimeout(Event):
    pass


@event_type("routing.transferred")
@dataclass(frozen=True, kw_only=True)
class Transferred(Event):
    team: str | None = None
    agent_id: str | None = None
    offer_id: str | None = None
    expires_at: datetime | None = None

    def check(self) -> None:
        if (self.team is None) == (self.agent_id is None):
            raise InvalidEvent("invalid_data", "data needs exactly one of team or agent_id", "team")
        if self.agent_id is not None:
            for name in ("offer_id", "expires_at"):
                if getattr(self, name) is None:
                    raise InvalidEvent(
                        "invalid_data", f"data.{name} is required with agent_id", name
                    )


@event_type("media.customer_dropped")
@dataclass(frozen=True, kw_only=True)
class CustomerDropped(Event):
    pass


@event_type("media.ringing")
@dataclass(frozen=True, kw_only=True)
class Ringing(Event):
    pass


@event_type("media.answered")
@dataclass(frozen=True, kw_only=True)
class Answered(Event):
    pass


@event_type("media.no_answer")
@dataclass(frozen=True, kw_only=True)
class NoAnswer(Event):
    reason: Literal["no_answer", "busy", "failed", "no_reply"]


@event_type("media.message")
@dataclass(frozen=True, kw_only=True)
class Message(Event):
    message_id: str
    sender: Sender
    text: str


@event_type("media.message_status")
@dataclass(frozen=True, kw_only=True)
class MessageStatus(Event):
    message_id: str
    status: Literal["sent", "delivered", "read", "failed"]


@event_type("media.channel_added")
@dataclass(frozen=True, kw_only=True)
class ChannelAdded(Event):
    channel: Channel


@event_type("media.hangup")
@dataclass(frozen=True, kw_only=True)
class Hangup(Event):
    source: HangupSource


@event_type("media.recording_ready")
@dataclass(frozen=True, kw_only=True)
class RecordingReady(Event):
    recording_id: str
    duration_s: float
    content_type: str


@event_type("wrapup.submitted")
@dataclass(frozen=True, kw_only=True)
class WrapupSubmitted(Event):
    disposition: str
    note: str | None = None


@event_type("wrapup.timeout")
@dataclass(frozen=True, kw_only=True)
class WrapupTimeout(Event):
    pass


@event_type("csat.received")
@dataclass(frozen=True, kw_only=True)
class CsatReceived(Event):
    score: int

    def check(self) -> None:
        if not 1 <= self.score <= 5:
            raise InvalidEvent("invalid_data", "data.score must be an integer from 1 to 5", "score")


@event_type("ticket.linked")
@dataclass(frozen=True, kw_only=True)
class TicketLinked(Event):
    ticket_id: str
    system: str | None = None
    url: str | None = None


# --- parsing -------------------------------------------------------------------------
#
# Each event class's fields are compiled once, on first use, into converters: a
# converter takes the raw value and whether the field is required, and returns the
# converted value or raises InvalidEvent naming the field. Paths are baked in, so
# nothing is looked up or formatted per event unless the event is wrong.

Converter = Callable[[Any, bool], Any]


def in_bounds(instant: datetime, now: datetime) -> bool:
    """Whether an aware `instant` lies within the bounds of time around `now`."""
    return EARLIEST <= instant <= now + AHEAD


def parse_event(envelope: Any, now: datetime | None = None) -> Event:
    """Build an event from a decoded JSON or msgpack envelope, or raise InvalidEvent
    naming the first field that is wrong. With `now` (the server's clock), an
    occurred_at out of bounds (`in_bounds`) is wrong too."""
    if not isinstance(envelope, dict):
        raise InvalidEvent("invalid_data", "an event must be an object")
    type_name = envelope.get("type")
    if not isinstance(type_name, str):
        raise InvalidEvent("invalid_data", "type is required and must be a string", "type")
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise InvalidEvent("unknown_type", f"unknown event type {type_name[:100]!r}", "type")
    values = {
        "event_id": _envelope_id(envelope.get("event_id"), "event_id"),
        "conversation_id": _conversation_id(envelope.get("conversation_id")),
        "occurred_at": _OCCURRED_AT(envelope.get("occurred_at"), True),
    }
    if now is not None and not in_bounds(values["occurred_at"], now):
        raise InvalidEvent(
            "invalid_data",
            "occurred_at must be from 2000-01-01T00:00:00Z to 24 hours after the server's clock",
            "occurred_at",
        )
    data = envelope.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidEvent("invalid_data", "data must be an object", "data")
    for name, convert, required in _fields_of(cls):
        raw = data.get(name)
        if raw is None and not required:
            continue
        values[name] = convert(raw, required)
    event = cls(**values)
    check = getattr(event, "check", None)
    if check is not None:
        check()
    return event


def _envelope_id(value: Any, name: str) -> str:
    value = _STRING[name](value, True)
    if not value:
        raise InvalidEvent("invalid_data", f"{name} must not be empty", name)
    if len(value) > ID_MAX_LENGTH:
        raise InvalidEvent(
            "invalid_data", f"{name} is longer than {ID_MAX_LENGTH} characters", name
        )
    return value


def _conversation_id(value: Any) -> str:
    value = _envelope_id(value, "conversation_id")
    if CONVERSATION_ID.fullmatch(value) is None:
        raise InvalidEvent(
            "invalid_data",
            f"conversation_id may only hold the characters {CONVERSATION_ID_CHARACTERS}",
            "conversation_id",
        )
    return value


_FIELDS: dict[type, tuple[tuple[str, Converter, bool], ...]] = {}


def _fields_of(cls: type) -> tuple[tuple[str, Converter, bool], ...]:
    """(name, converter, required) for each field of `data`, compiled on first use (the
    annotations are strings until every class they name exists)."""
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = _compile_fields(cls, "data.")
    return fields


def _compile_fields(cls: type, prefix: str) -> tuple[tuple[str, Converter, bool], ...]:
    hints = typing.get_type_hints(cls)
    return tuple(
        (
            field.name,
            _compile(hints[field.name], prefix + field.name),
            field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING,
        )
        for field in dataclasses.fields(cls)
        if field.init and field.name not in _ENVELOPE
    )


_ENVELOPE = ("event_id", "conversation_id", "occurred_at")


def _compile(hint: Any, path: str) -> Converter:
    """The converter checking one value against an annotation, at `path`."""
    leaf = _leaf(path)

    def missing() -> InvalidEvent:
        return InvalidEvent("invalid_data", f"{path} is required", leaf)

    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        inner = _compile(next(a for a in typing.get_args(hint) if a is not type(None)), path)

        def optional(value: Any, required: bool) -> Any:
            if value is None:
                if required:
                    raise missing()
                return None
            return inner(value, True)

        return optional
    if origin is Literal:
        choices = typing.get_args(hint)
        wrong = f"{path} must be one of {', '.join(choices)}"

        def literal(value: Any, required: bool) -> Any:
            if value is None:
                raise missing()
            if value not in choices:
                raise InvalidEvent("invalid_data", wrong, leaf)
            return value

        return literal
    if hint is str:

        def string(value: Any, required: bool) -> str:
            if isinstance(value, str):
                return value
            if value is None:
                raise missing()
            raise InvalidEvent("invalid_data", f"{path} must be a string", leaf)

        return string
    if hint is int:

        def integer(value: Any, required: bool) -> int:
            if value is None:
                raise missing()
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidEvent("invalid_data", f"{path} must be an integer", leaf)
            return value

        return integer
    if hint is float:

        def number(value: Any, required: bool) -> float:
            if value is None:
                raise missing()
            if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                raise InvalidEvent("invalid_data", f"{path} must be a number", leaf)
            if value < 0:
                raise InvalidEvent("invalid_data", f"{path} must not be negative", leaf)
            try:
                return float(value)
            except OverflowError:
                raise InvalidEvent("invalid_data", f"{path} is out of range", leaf) from None

        return number
    if hint is datetime:

        def instant(value: Any, required: bool) -> datetime:
            if value is None:
                raise missing()
            return _parse_instant(value, path)

        return instant
    if dataclasses.is_dataclass(hint):
        fields = _compile_fields(hint, path + ".")

        def nested(value: Any, required: bool) -> Any:
            if value is None:
                raise missing()
            if not isinstance(value, dict):
                raise InvalidEvent("invalid_data", f"{path} must be an object", leaf)
            values = {}
            for name, convert, field_required in fields:
                raw = value.get(name)
                if raw is None and not field_required:
                    continue
                values[name] = convert(raw, field_required)
            return hint(**values)

        return nested
    raise TypeError(f"no converter for {hint!r}")  # a programming error, not bad input


def _parse_instant(value: Any, path: str) -> datetime:
    if isinstance(value, datetime):
        instant = value
    elif isinstance(value, str):
        match = RFC3339.match(value)
        try:
            if match is None:
                raise ValueError(value)
            # Python parses at most microseconds: keep six digits of a longer fraction.
            fraction = (match["fraction"] or "")[:7]
            instant = datetime.fromisoformat(
                f"{match['date']}T{match['time']}{fraction}{match['offset'].upper()}"
            )
        except ValueError:
            raise InvalidEvent(
                "invalid_data", f"{path} must be an RFC 3339 timestamp", _leaf(path)
            ) from None
    else:
        raise InvalidEvent("invalid_data", f"{path} must be an RFC 3339 timestamp", _leaf(path))
    if instant.tzinfo is None:
        raise InvalidEvent(
            "invalid_data", f"{path} needs a time zone offset (Z or +hh:mm)", _leaf(path)
        )
    try:
        return instant.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 falls before year 1 in UTC
        raise InvalidEvent("invalid_data", f"{path} is out of range", _leaf(path)) from None


def _leaf(path: str) -> str:
    return path.removeprefix("data.")


_STRING = {name: _compile(str, name) for name in ("event_id", "conversation_id")}
_OCCURRED_AT = _compile(datetime, "occurred_at")
