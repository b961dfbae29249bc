"""The field objects of server/core/fields.py: what each refuses and how it names the
field, what each says of itself as JSON Schema, and that the OpenAPI document's request
bodies are the ones the services read with."""

from __future__ import annotations

import jsonschema_rs
import msgpack
import pytest

from server.core.errors import Refused
from server.core.fields import (
    BusinessHours,
    Choice,
    Integer,
    List,
    Object,
    Phone,
    Text,
    TextList,
    TimeZone,
)
from server.live.definitions import VIEW_BODY
from server.openapi.document import openapi_document
from server.openapi.routing import PRESENCE_BODY, TRANSFER_BODY
from server.providers.actions import MESSAGE_BODY, WRAPUP_BODY
from server.providers.initiate import INITIATE_BODY
from server.providers.registry import PROVIDER_BODY
from server.tenants.settings import AGENT_BODY, TEAM_BODY, TENANT_BODY


def refusal(field, value, where: str = "f") -> Refused:
    with pytest.raises(Refused) as info:
        field.read(value, where)
    return info.value


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        (Integer(1, 5), 0, "f: must be an integer from 1 to 5"),
        (Integer(1, 5), True, "f: must be an integer from 1 to 5"),
        (Integer(1, 5), "3", "f: must be an integer from 1 to 5"),
        (Text(3), "", "f: must be a non-empty string"),
        (Text(3), "  ", "f: must be a non-empty string"),
        (Text(3), "abcd", "f: must be at most 3 characters"),
        (Text(3), "a\x00", "f: must not contain NUL characters"),
        (Text(3), None, "f: must be a non-empty string"),
        (Choice(("a", "b")), "c", "f: must be one of a, b"),
        (Choice(("a", "b")), ["a"], "f: must be one of a, b"),
        (TextList(2), ["a", "b", "c"], "f: must be a list of at most 2 strings"),
        (TextList(2), [""], "f: every item must be a non-empty string of at most 200 "
         "characters, without NUL"),
        (TimeZone(), "Mars/Olympus", "f: 'Mars/Olympus' is not an IANA time zone such as "
         "Europe/Madrid"),
        (Phone(), "+1", "f: must be a valid phone number in E.164 form, e.g. +34911234567"),
        (Phone(), "ann@example.com", "f: an email address cannot be called or texted: give a "
         "phone number in E.164 form, e.g. +34911234567"),
        (List(Text(3), max_items=1), ["a", "b"], "f: must be a list of at most 1 items"),
        (List(Text(3)), ["a", ""], "f[1]: must be a non-empty string"),
    ],
)  # fmt: skip
def test_each_field_refuses_naming_the_field(field, value, message):
    error = refusal(field, value)
    assert (error.code, error.message) == ("invalid_field", message)
    assert error.extra["field"] == message.split(":")[0]


def test_an_object_reads_the_fields_given_in_order_and_names_what_is_wrong():
    body = Object(
        a=Integer(0, 9),
        b=Text(9, nullable=True),
        items=List(Object(n=Integer(0, 9), required=("n",))),
        required=("a",),
    )
    assert body.read({"b": None, "a": 1}) == {"a": 1, "b": None}
    assert list(body.read({"b": "x", "a": 1})) == ["a", "b"]
    cases = [
        ({"b": "x"}, "a", "a: is required"),
        ({"a": 1, "zz": 1, "c": 2}, "c", "c: unknown field (allowed: a, b, items)"),
        ({"a": 1, "items": [{"n": 1}, {}]}, "items[1].n", "items[1].n: is required"),
        ({"a": 1, "items": [{"n": 1, "m": 2}]}, "m", "m: unknown field (allowed: n)"),
        ({"a": 1, "items": [5]}, "items[0]", "items[0]: must be an object"),
        # msgpack maps may have keys of several types: named, not compared.
        ({"a": 1, 7: 1, "x": 2}, "7", "7: unknown field (allowed: a, b, items)"),
    ]
    for value, field, message in cases:
        error = refusal(body, value, "")
        assert (error.extra["field"], error.message) == (field, message), value
    malformed = refusal(body, [1], "")
    assert malformed.code == "malformed"
    assert body.partial().read({}) == {}


def test_business_hours_name_the_day_and_keys_by_themselves():
    hours = BusinessHours()
    assert hours.read("always") == "always"
    week = {"mon": ["09:00-13:00", "14:00-18:00"], "holidays": ["2026-12-25"]}
    assert hours.read(week) == week
    for value, field in [
        ("sometimes", "business_hours"),
        ({"mon": "09:00-17:00"}, "business_hours.mon"),
        ({"tue": ["18:00-09:00"]}, "business_hours.tue"),
        ({"funday": []}, "funday"),
        ({"holidays": ["2026-13-01"]}, "business_hours.holidays"),
    ]:
        assert refusal(hours, value, "business_hours").extra["field"] == field, value


def test_a_query_integer_is_parsed_or_refused_never_failing():
    limit = Integer(1, 1000, default=100)
    assert limit.parse(None, "limit") == 100
    assert limit.parse("7", "limit") == 7
    for text in ("0", "-1", "1.5", " 7", "\u00b2", "\u0663", "9" * 5000, ""):
        assert refusal_of_parse(limit, text).extra["field"] == "limit", text


def refusal_of_parse(field, text) -> Refused:
    with pytest.raises(Refused) as info:
        field.parse(text, "limit")
    return info.value


def test_schemas_say_what_the_checks_take():
    assert Integer(1, 50).schema() == {"type": "integer", "minimum": 1, "maximum": 50}
    assert Integer(1, 50, nullable=True).schema()["type"] == ["integer", "null"]
    assert Text(64).schema() == {"type": "string", "minLength": 1, "maxLength": 64}
    assert Choice(("a", "b"), nullable=True).schema()["enum"] == ["a", "b", None]
    assert TextList(7).schema()["maxItems"] == 7
    week = BusinessHours.weekly_schedule()
    assert jsonschema_rs.meta.is_valid(week)
    valid = jsonschema_rs.validator_for(week)
    assert valid.is_valid({"mon": ["09:00-17:30"], "holidays": ["2026-12-25"]})
    assert not valid.is_valid({"mon": ["9-5"]})
    assert not valid.is_valid({"funday": []})


BODIES = {
    "TenantUpdate": TENANT_BODY,
    "TeamUpdate": TEAM_BODY,
    "AgentUpdate": AGENT_BODY,
    "ProviderUpdate": PROVIDER_BODY,
    "InitiateRequest": INITIATE_BODY,
    "MessageRequest": MESSAGE_BODY,
    "Wrapup": WRAPUP_BODY,
    "PresenceUpdate": PRESENCE_BODY,
    "Transfer": TRANSFER_BODY,
    "ViewCreate": VIEW_BODY,
}


def test_the_documents_request_bodies_are_the_ones_the_services_read():
    schemas = openapi_document()["components"]["schemas"]
    for name, body in BODIES.items():
        assert schemas[name] == body.schema(), name


async def test_a_msgpack_body_with_keys_of_several_types_is_422_not_500(api):
    response = await api.client.put(
        "/api/v1/tenant",
        content=msgpack.packb({1: "x", "colour": 2}),
        headers={**api.auth("admin"), "Content-Type": "application/msgpack"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == "1"
