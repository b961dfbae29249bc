"""parse_event: every event type of docs/domain.md from a decoded JSON or msgpack envelope,
and every way an envelope can be wrong (InvalidEvent with a code and the field)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgpack
import pytest

from state_machine import EVENT_TYPES, Customer, InvalidEvent, parse_event

OCCURRED = "2026-11-24T10:00:00.123Z"
OCCURRED_AT = datetime(2026, 11, 24, 10, 0, 0, 123000, tzinfo=UTC)
EXPIRES = "2026-11-24T10:00:30Z"
EXPIRES_AT = datetime(2026, 11, 24, 10, 0, 30, tzinfo=UTC)
ENVELOPE_FIELDS = ("event_id", "conversation_id", "occurred_at")


def envelope(type_: str, data: Any = None, **overrides: Any) -> dict[str, Any]:
    body = {
        "event_id": "ev-1",
        "type": type_,
        "conversation_id": "conv-1",
        "occurred_at": OCCURRED,
        "data": {} if data is None else data,
    }
    body.update(overrides)
    return body


# Every type with every field of docs/domain.md: the data sent, and the attributes parsed
# (only where they differ from what was sent).
VALID: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "conversation.created": (
        {
            "channel": "call",
            "contact": "+15550100",
            "customer": {"name": "Ann", "id": "c7", "email": "a@x.io", "phone": "+15550100"},
            "contacto_number": "+15559000",
            "team": "sales",
        },
        {"customer": Customer("Ann", "c7", "a@x.io", "+15550100")},
    ),
    "conversation.initiated": (
        {
            "channel": "whatsapp",
            "contact": "+15550100",
            "agent_id": "a1",
            "contacto_number": "+15559000",
            "customer": {"name": "Ann"},
            "text": "Hello!",
        },
        {"customer": Customer("Ann")},
    ),
    "routing.out_of_hours": ({"team": "sales"}, {}),
    "routing.enqueued": ({"team": "sales"}, {}),
    "routing.enqueue_failed": ({"team": "sales", "reason": "queue full"}, {}),
    "routing.assignment_failed": ({"reason": "nobody logged in"}, {}),
    "routing.offered": (
        {"agent_id": "a1", "offer_id": "o1", "expires_at": EXPIRES},
        {"expires_at": EXPIRES_AT},
    ),
    "routing.offer_declined": ({"agent_id": "a1", "offer_id": "o1", "reason": "expired"}, {}),
    "agent.accepted": ({"agent_id": "a1", "offer_id": "o1"}, {}),
    "routing.queue_timeout": ({}, {}),
    "routing.transferred": (
        {"agent_id": "a2", "offer_id": "o2", "expires_at": EXPIRES},
        {"expires_at": EXPIRES_AT, "team": None},
    ),
    "media.customer_dropped": ({}, {}),
    "media.ringing": ({}, {}),
    "media.answered": ({}, {}),
    "media.no_answer": ({"reason": "busy"}, {}),
    "media.message": ({"message_id": "m1", "sender": "customer", "text": "hi"}, {}),
    "media.message_status": ({"message_id": "m1", "status": "read"}, {}),
    "media.channel_added": ({"channel": "sms"}, {}),
    "media.hangup": ({"source": "agent"}, {}),
    "media.recording_ready": (
        {"recording_id": "r1", "duration_s": 61, "content_type": "audio/mpeg"},
        {"duration_s": 61.0},
    ),
    "wrapup.submitted": ({"disposition": "resolved", "note": "refund"}, {}),
    "wrapup.timeout": ({}, {}),
    "csat.received": ({"score": 5}, {}),
    "ticket.linked": ({"ticket_id": "T-1", "system": "jira", "url": "https://j.example/T-1"}, {}),
}

# docs/domain.md: the fields each type requires (optional ones are marked so there).
# routing.transferred needs `team`, or `agent_id` with `offer_id` and `expires_at`.
REQUIRED: dict[str, tuple[str, ...]] = {
    "conversation.created": ("channel", "contact", "customer"),
    "conversation.initiated": ("channel", "contact", "agent_id"),
    "routing.out_of_hours": ("team",),
    "routing.enqueued": ("team",),
    "routing.enqueue_failed": ("team", "reason"),
    "routing.assignment_failed": ("reason",),
    "routing.offered": ("agent_id", "offer_id", "expires_at"),
    "routing.offer_declined": ("agent_id", "offer_id", "reason"),
    "agent.accepted": ("agent_id", "offer_id"),
    "routing.queue_timeout": (),
    "routing.transferred": (),
    "media.customer_dropped": (),
    "media.ringing": (),
    "media.answered": (),
    "media.no_answer": ("reason",),
    "media.message": ("message_id", "sender", "text"),
    "media.message_status": ("message_id", "status"),
    "media.channel_added": ("channel",),
    "media.hangup": ("source",),
    "media.recording_ready": ("recording_id", "duration_s", "content_type"),
    "wrapup.submitted": ("disposition",),
    "wrapup.timeout": (),
    "csat.received": ("score",),
    "ticket.linked": ("ticket_id",),
}

MISSING = [
    *[(type_, name) for type_, names in REQUIRED.items() for name in names],
    *[("routing.transferred", name) for name in ("offer_id", "expires_at")],
]

# (type, data changes, the field named): each makes otherwise valid data invalid.
WRONG: list[tuple[str, dict[str, Any], str]] = [
    ("csat.received", {"score": "5"}, "score"),  # string for int
    ("csat.received", {"score": True}, "score"),  # bool for int
    ("csat.received", {"score": 4.5}, "score"),
    ("csat.received", {"score": 0}, "score"),
    ("csat.received", {"score": 6}, "score"),
    ("media.recording_ready", {"duration_s": "61"}, "duration_s"),
    ("media.recording_ready", {"duration_s": True}, "duration_s"),
    ("media.recording_ready", {"duration_s": -1}, "duration_s"),
    ("media.recording_ready", {"duration_s": float("nan")}, "duration_s"),
    ("conversation.created", {"customer": "Ann"}, "customer"),  # non-object customer
    ("conversation.created", {"customer": ["Ann"]}, "customer"),
    ("conversation.created", {"customer": {"name": 5}}, "customer.name"),
    ("conversation.created", {"customer": {"name": "Ann", "email": 5}}, "customer.email"),
    ("conversation.created", {"channel": "fax"}, "channel"),
    ("conversation.created", {"channel": "omnichannel"}, "channel"),  # one channel per event
    ("conversation.created", {"team": 7}, "team"),
    ("conversation.initiated", {"customer": "Ann"}, "customer"),
    ("conversation.initiated", {"text": 5}, "text"),
    ("routing.offered", {"expires_at": "2026-11-24T10:00:30"}, "expires_at"),  # naive
    ("routing.offered", {"expires_at": datetime(2026, 11, 24, 10)}, "expires_at"),  # naive
    ("routing.offered", {"expires_at": "tomorrow"}, "expires_at"),
    ("routing.offered", {"expires_at": "2026-13-01T00:00:00Z"}, "expires_at"),
    ("routing.offered", {"expires_at": 1_795_000_000}, "expires_at"),
    ("routing.offered", {"agent_id": 1}, "agent_id"),
    ("routing.offer_declined", {"reason": "busy"}, "reason"),
    ("media.message", {"sender": "bot"}, "sender"),
    ("media.message", {"text": ["hi"]}, "text"),
    ("media.message_status", {"status": "bounced"}, "status"),
    ("media.no_answer", {"reason": "timeout"}, "reason"),
    ("media.hangup", {"source": "provider"}, "source"),
    ("media.channel_added", {"channel": "email"}, "channel"),
    ("routing.enqueued", {"team": ["sales"]}, "team"),
    ("wrapup.submitted", {"note": 5}, "note"),
    ("ticket.linked", {"url": 5}, "url"),
    ("routing.transferred", {"team": 5, "agent_id": None, "offer_id": None}, "team"),
]

# (changes to the envelope, the field named)
WRONG_ENVELOPE: list[tuple[dict[str, Any], str]] = [
    ({"occurred_at": "2026-11-24T10:00:00"}, "occurred_at"),  # naive
    ({"occurred_at": datetime(2026, 11, 24, 10)}, "occurred_at"),  # naive msgpack datetime
    ({"occurred_at": "2026-11-24T25:00:00Z"}, "occurred_at"),
    ({"occurred_at": "24/11/2026 10:00"}, "occurred_at"),
    ({"occurred_at": ""}, "occurred_at"),
    ({"occurred_at": 1_795_000_000}, "occurred_at"),
    ({"occurred_at": True}, "occurred_at"),
    ({"event_id": 5}, "event_id"),
    ({"event_id": "e" * 201}, "event_id"),
    ({"conversation_id": ["c"]}, "conversation_id"),
    ({"conversation_id": "c" * 201}, "conversation_id"),
    ({"type": 5}, "type"),
    ({"data": ["team", "sales"]}, "data"),
    ({"data": "team=sales"}, "data"),
]

# Valid ISO 8601 for datetime.fromisoformat, but not RFC 3339 (docs/domain.md: occurred_at
# is "RFC 3339, UTC or with offset").
NOT_RFC_3339 = [
    "20261124T100000Z",  # basic format
    "2026-W48-2T10:00:00Z",  # week date
    "2026-11-24T10:00Z",  # no seconds
    "2026-11-24T10Z",
]


def invalid(body: Any) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as caught:
        parse_event(body)
    return caught.value


# --- valid events ---------------------------------------------------------------------


def test_every_event_type_has_a_valid_example_and_required_fields():
    assert set(VALID) == set(EVENT_TYPES) == set(REQUIRED)


@pytest.mark.parametrize("type_", sorted(VALID))
def test_valid_event(type_: str):
    data, converted = VALID[type_]
    event = parse_event(envelope(type_, data))
    assert type(event) is EVENT_TYPES[type_]
    assert event.type == type_
    assert (event.event_id, event.conversation_id, event.occurred_at) == (
        "ev-1",
        "conv-1",
        OCCURRED_AT,
    )
    for name, value in {**data, **converted}.items():
        assert getattr(event, name) == value, name
    assert dataclasses.replace(event) == event  # a plain frozen dataclass


@pytest.mark.parametrize("type_", sorted(VALID))
def test_valid_event_with_only_required_fields(type_: str):
    data, _ = VALID[type_]
    required = {name: value for name, value in data.items() if name in REQUIRED[type_]}
    if type_ == "routing.transferred":
        required = {"team": "billing"}
    event = parse_event(envelope(type_, required))
    for field in dataclasses.fields(event):
        if field.name not in (*ENVELOPE_FIELDS, *required):
            assert getattr(event, field.name) is None, field.name


@pytest.mark.parametrize("data", [None, {}], ids=["null", "empty"])
def test_events_without_data_accept_null_or_missing_data(data):
    body = envelope("media.answered")
    body["data"] = data
    assert parse_event(body).type == "media.answered"
    del body["data"]
    assert parse_event(body).type == "media.answered"


def test_unknown_data_keys_are_ignored():
    event = parse_event(envelope("routing.enqueued", {"team": "sales", "priority": 3}))
    assert event.team == "sales"


def test_required_fields_match_the_event_classes():
    """REQUIRED (from docs/domain.md) agrees with the dataclasses' fields without default."""
    for type_, cls in EVENT_TYPES.items():
        required = {
            field.name
            for field in dataclasses.fields(cls)
            if field.name not in ENVELOPE_FIELDS
            and field.default is dataclasses.MISSING
            and field.default_factory is dataclasses.MISSING
        }
        assert required == set(REQUIRED[type_]), type_


# --- missing fields -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["absent", "null"])
@pytest.mark.parametrize(("type_", "name"), MISSING, ids=lambda value: str(value))
def test_missing_required_field(type_: str, name: str, how: str):
    data = dict(VALID[type_][0])
    if how == "absent":
        data.pop(name)
    else:
        data[name] = None
    error = invalid(envelope(type_, data))
    assert error.code == "invalid_data"
    assert name in error.message
    assert error.field == name


@pytest.mark.parametrize("name", ENVELOPE_FIELDS)
@pytest.mark.parametrize("type_", sorted(VALID))
def test_missing_envelope_field(type_: str, name: str):
    body = envelope(type_, VALID[type_][0])
    del body[name]
    error = invalid(body)
    assert (error.code, error.field) == ("invalid_data", name)
    assert name in error.message


@pytest.mark.parametrize("type_", ["conversation.created", "conversation.initiated"])
def test_customer_without_name(type_: str):
    data = {**VALID[type_][0], "customer": {"email": "a@x.io"}}
    error = invalid(envelope(type_, data))
    assert error.code == "invalid_data"
    assert "customer.name" in error.message


@pytest.mark.parametrize(
    "data",
    [{}, {"team": "sales", "agent_id": "a2", "offer_id": "o2", "expires_at": EXPIRES}],
    ids=["neither", "both"],
)
def test_transfer_needs_exactly_one_of_team_or_agent(data):
    error = invalid(envelope("routing.transferred", data))
    assert error.code == "invalid_data"
    assert "team" in error.message and "agent_id" in error.message


# --- wrong types and values -----------------------------------------------------------


@pytest.mark.parametrize(("type_", "changes", "name"), WRONG, ids=lambda value: str(value))
def test_wrong_data(type_: str, changes: dict, name: str):
    data = {**VALID[type_][0], **changes}
    data = {key: value for key, value in data.items() if value is not None}
    error = invalid(envelope(type_, data))
    assert error.code == "invalid_data"
    assert name in error.message
    assert error.field == name


@pytest.mark.parametrize(("changes", "name"), WRONG_ENVELOPE, ids=lambda value: str(value))
def test_wrong_envelope(changes: dict, name: str):
    body = envelope("routing.enqueued", {"team": "sales"})
    body.update(changes)
    error = invalid(body)
    assert error.code == "invalid_data"
    assert name in error.message
    assert error.field == name


@pytest.mark.parametrize("value", NOT_RFC_3339)
def test_timestamp_that_is_not_rfc_3339_is_rejected(value: str):
    error = invalid(envelope("media.answered", occurred_at=value))
    assert (error.code, error.field) == ("invalid_data", "occurred_at")


@pytest.mark.parametrize("name", ["unknown.event", "ROUTING.ENQUEUED", ""])
def test_unknown_type(name: str):
    error = invalid(envelope(name, {"team": "sales"}))
    assert error.code == "unknown_type"
    assert error.field == "type"
    assert repr(name) in error.message


def test_missing_type():
    body = envelope("routing.enqueued", {"team": "sales"})
    del body["type"]
    error = invalid(body)
    assert (error.code, error.field) == ("invalid_data", "type")


@pytest.mark.parametrize("body", [None, [], "routing.enqueued", 5, b"{}"], ids=repr)
def test_envelope_that_is_not_an_object(body):
    error = invalid(body)
    assert error.code == "invalid_data"
    assert "object" in error.message


def test_the_first_wrong_field_is_named():
    error = invalid(envelope("media.message", {"sender": "bot"}))  # message_id comes first
    assert error.field == "message_id"


# --- timestamps -----------------------------------------------------------------------


def test_rfc_3339_with_offset_is_normalised_to_utc():
    event = parse_event(
        envelope(
            "routing.offered",
            {"agent_id": "a1", "offer_id": "o1", "expires_at": "2026-11-24T05:30:30-05:00"},
            occurred_at="2026-11-24T11:00:00.5+01:00",
        )
    )
    assert event.occurred_at == datetime(2026, 11, 24, 10, 0, 0, 500000, tzinfo=UTC)
    assert event.occurred_at.utcoffset() == timedelta(0)
    assert event.occurred_at.tzinfo == UTC
    assert event.expires_at == datetime(2026, 11, 24, 10, 30, 30, tzinfo=UTC)
    assert event.expires_at.tzinfo == UTC


def test_utc_with_z_and_milliseconds():
    event = parse_event(envelope("media.answered", occurred_at="2026-11-24T10:00:00.123Z"))
    assert event.occurred_at == OCCURRED_AT and event.occurred_at.tzinfo == UTC


def test_msgpack_style_datetime_objects_are_accepted():
    cet = timezone(timedelta(hours=1))
    event = parse_event(
        envelope(
            "routing.offered",
            {"agent_id": "a1", "offer_id": "o1", "expires_at": EXPIRES_AT},
            occurred_at=datetime(2026, 11, 24, 11, 0, 0, 123000, tzinfo=cet),
        )
    )
    assert event.occurred_at == OCCURRED_AT and event.occurred_at.tzinfo == UTC
    assert event.expires_at == EXPIRES_AT


def test_a_real_msgpack_round_trip():
    """What server/edge/http.py decodes: msgpack timestamps as aware datetimes (timestamp=3)."""
    body = envelope(
        "routing.offered",
        {"agent_id": "a1", "offer_id": "o1", "expires_at": EXPIRES_AT},
        occurred_at=OCCURRED_AT,
    )
    decoded = msgpack.unpackb(msgpack.packb(body, datetime=True), timestamp=3)
    event = parse_event(decoded)
    assert (event.occurred_at, event.expires_at) == (OCCURRED_AT, EXPIRES_AT)


# --- bounded time and reachable ids (docs/domain.md) ------------------------------------

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1999-12-31T23:59:59.999Z",
        "2026-11-25T12:00:00.001Z",  # a moment past 24 hours after the server's clock
        "2026-11-25T13:00:01+01:00",
        "9999-12-31T23:59:59-01:00",  # overflows when converted to UTC
        "0001-01-01T00:00:00+01:00",
        datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),  # a msgpack timestamp
    ],
    ids=str,
)
def test_occurred_at_out_of_bounds_is_invalid(value):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(envelope("media.answered", occurred_at=value), NOW)
    assert (caught.value.code, caught.value.field) == ("invalid_data", "occurred_at")
    assert "occurred_at" in caught.value.message


@pytest.mark.parametrize(
    "value", ["2000-01-01T00:00:00Z", "2026-11-25T12:00:00Z", "2026-11-25T13:00:00+01:00"]
)
def test_occurred_at_at_its_bounds_is_valid(value):
    assert parse_event(envelope("media.answered", occurred_at=value), NOW).type == "media.answered"


def test_without_a_clock_the_machine_checks_no_bounds():
    event = parse_event(envelope("media.answered", occurred_at="9999-12-31T23:59:59Z"))
    assert event.occurred_at.year == 9999


@pytest.mark.parametrize(
    "value",
    ["a/b", "a?b", "a#b", "a b", "a%2Fb", "café", "a\\b", "a\nb", "<x>", "a\0b", "a,b"],
    ids=repr,
)
def test_a_conversation_id_outside_its_characters_is_invalid(value):
    error = invalid(envelope("media.answered", conversation_id=value))
    assert (error.code, error.field) == ("invalid_data", "conversation_id")
    assert "A-Z a-z 0-9 . _ ~ : @ + = -" in error.message


@pytest.mark.parametrize(
    "value",
    [
        "A-Za-z0-9._~:@+=-",
        "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBJDQjZCMzlEQUE4OTJBMTE4RTUA=",
        "CA1234567890abcdef1234567890abcdef",
        "c-" + "f" * 24,
        "x" * 200,
    ],
)
def test_a_conversation_id_of_its_characters_is_valid(value):
    assert parse_event(envelope("media.answered", conversation_id=value)).conversation_id == value
