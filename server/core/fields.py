"""Fields of requests, declared once: each field object checks a value and describes
itself as JSON Schema, so that a body's bounds are written in one place, where the
service that reads it declares it, and the OpenAPI document (server/openapi) and
docs/api.md are built from the same objects.

    TEAM_BODY = Object(
        queue_capacity=Integer(0, 100_000),
        wrap_up_timeout_s=Integer(1, 86400, nullable=True),
    )
    values = TEAM_BODY.read(body)  # the fields given, checked: {"queue_capacity": 12}

A value that does not fit is refused as `Refused("invalid_field", "<field>: <what is
wrong>", field=<field>)` (422): a nested field is named by its path
(`numbers[2].team`), a key no field declares by itself.
"""

from __future__ import annotations

import copy
import re
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from server.core.errors import Refused

MISSING: Any = object()  # a key the request left out


class Invalid(Exception):
    """A value that does not fit its field: where (the field's path) and what is wrong."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def ref(name: str) -> dict:
    """A reference to a schema of the OpenAPI document's components."""
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    """`schema` or null (a type list, with null among the enum values)."""
    if "type" not in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    out = {**schema, "type": [*types, "null"]}
    if "enum" in schema:
        out["enum"] = [*schema["enum"], None]
    return out


def unknown_keys(value: dict, allowed) -> None:
    """Refuses a key not `allowed`, naming it (by itself, wherever it is)."""
    extra = sorted(str(key) for key in value if key not in allowed)
    if extra:
        raise Invalid(extra[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")


class Field:
    """One value of a request. `check(value, where)` returns it or raises Invalid;
    `schema()` is its JSON Schema. `nullable`: null is taken (and read as None);
    `default`: what the service assumes when the key is left out (documented, and
    filled in by an Object made with `defaults=True`)."""

    code = "invalid_field"  # the refusal's code (views say invalid_view)

    def __init__(self, *, nullable: bool = False, default: Any = MISSING, description: str = ""):
        self.nullable = nullable
        self.default = default
        self.description = description

    def read(self, value: Any, where: str = "") -> Any:
        """The value checked, or Refused naming the field."""
        try:
            return self.take(value, where)
        except Invalid as error:
            raise Refused(self.code, str(error), field=error.field) from None

    def take(self, value: Any, where: str) -> Any:
        if value is None and self.nullable:
            return None
        return self.check(value, where)

    def check(self, value: Any, where: str) -> Any:
        return value

    def describe(self) -> dict:
        return {}

    def schema(self) -> dict:
        schema = self.describe()
        if self.nullable:
            schema = nullable(schema)
        if self.default is not MISSING:
            schema["default"] = self.default
        if self.description:
            schema["description"] = self.description
        return schema


class Value(Field):
    """A value checked by the service that reads it (its checks need more than a field:
    a table of its own, another field's value), described by `like`: a field or a
    schema."""

    def __init__(self, like: Field | dict | None = None, **options: Any):
        super().__init__(**options)
        self.like = like

    def describe(self) -> dict:
        if isinstance(self.like, Field):
            return self.like.schema()
        return dict(self.like or {})


class Ref(Value):
    """A value described by a schema of the OpenAPI document's components."""

    def __init__(self, name: str, **options: Any):
        super().__init__(ref(name), **options)
        self.name = name


class Integer(Field):
    """An integer from `minimum` to `maximum` (None: no bound, for what the server sends)."""

    def __init__(self, minimum: int = 0, maximum: int | None = 10**9, **options: Any):
        super().__init__(**options)
        self.minimum = minimum
        self.maximum = maximum

    def check(self, value: Any, where: str) -> int:
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < self.minimum
            or (self.maximum is not None and value > self.maximum)
        ):
            if self.maximum is None:
                raise Invalid(where, f"must be an integer of at least {self.minimum}")
            raise Invalid(where, f"must be an integer from {self.minimum} to {self.maximum}")
        return value

    def parse(self, text: str | None, where: str) -> int:
        """A query parameter's text (None: left out), as an integer of this field."""
        if text is None and self.default is not MISSING:
            return self.default
        if not isinstance(text, str) or not re.fullmatch(r"[0-9]{1,12}", text):
            return self.read(text, where)  # refused, with the field's own message
        return self.read(int(text), where)

    def describe(self) -> dict:
        schema = {"type": "integer", "minimum": self.minimum}
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        return schema


class Boolean(Field):
    def check(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise Invalid(where, "must be true or false")
        return value

    def describe(self) -> dict:
        return {"type": "boolean"}


class String(Field):
    """Any string (what the server sends: ids, messages, instants)."""

    def __init__(self, format: str | None = None, **options: Any):
        super().__init__(**options)
        self.format = format

    def check(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise Invalid(where, "must be a string")
        return value

    def describe(self) -> dict:
        return {"type": "string", **({"format": self.format} if self.format else {})}


class Instant(String):
    """An RFC 3339 instant in UTC, as the server writes them (2026-11-24T10:00:00.123Z)."""

    def __init__(self, **options: Any):
        super().__init__("date-time", **options)


class Text(Field):
    """A string with something in it, of at most `max_length` characters, without NUL
    (PostgreSQL text cannot hold it)."""

    def __init__(self, max_length: int = 1000, **options: Any):
        super().__init__(**options)
        self.max_length = max_length

    def check(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise Invalid(where, "must be a non-empty string")
        if len(value) > self.max_length:
            raise Invalid(where, f"must be at most {self.max_length} characters")
        if "\x00" in value:
            raise Invalid(where, "must not contain NUL characters")
        return value

    def describe(self) -> dict:
        return {"type": "string", "minLength": 1, "maxLength": self.max_length}


class Choice(Field):
    def __init__(self, values, **options: Any):
        super().__init__(**options)
        self.values = tuple(values)

    def check(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in self.values:
            raise Invalid(where, f"must be one of {', '.join(self.values)}")
        return value

    def describe(self) -> dict:
        return {"type": "string", "enum": list(self.values)}


MAX_NAME = 200  # characters of a name or an id: a team's, an agent's, a conversation's
NAME = Text(MAX_NAME)


class TextList(Field):
    """A list of names (teams, origins), named as a whole when one is wrong."""

    ITEM = NAME

    def __init__(self, max_items: int = 100, **options: Any):
        super().__init__(**options)
        self.max_items = max_items

    def check(self, value: Any, where: str) -> list:
        if not isinstance(value, list) or len(value) > self.max_items:
            raise Invalid(where, f"must be a list of at most {self.max_items} strings")
        for item in value:
            try:
                self.ITEM.check(item, where)
            except Invalid:
                raise Invalid(
                    where,
                    f"every item must be a non-empty string of at most {self.ITEM.max_length} "
                    "characters, without NUL",
                ) from None
        return value

    def describe(self) -> dict:
        return {"type": "array", "items": self.ITEM.schema(), "maxItems": self.max_items}


class List(Field):
    """A list of `item`s, each named by its index when it is wrong (`numbers[2]`)."""

    def __init__(self, item: Field, max_items: int | None = None, **options: Any):
        super().__init__(**options)
        self.item = item
        self.max_items = max_items

    def check(self, value: Any, where: str) -> list:
        if not isinstance(value, list):
            raise Invalid(where, "must be a list")
        if self.max_items is not None and len(value) > self.max_items:
            raise Invalid(where, f"must be a list of at most {self.max_items} items")
        return [self.item.take(item, f"{where}[{i}]") for i, item in enumerate(value)]

    def describe(self) -> dict:
        schema = {"type": "array", "items": self.item.schema()}
        if self.max_items is not None:
            schema["maxItems"] = self.max_items
        return schema


class TimeZone(Text):
    def __init__(self, **options: Any):
        options.setdefault("description", "An IANA time zone, e.g. Europe/Madrid.")
        super().__init__(64, **options)

    def check(self, value: Any, where: str) -> str:
        value = super().check(value, where)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise Invalid(
                where, f"{value!r} is not an IANA time zone such as Europe/Madrid"
            ) from None
        return value


# A web origin: a scheme, a host and maybe a port; nothing else (no path, no `*`).
_ORIGIN = re.compile(
    r"^https?://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?$"
)


class Origin(Text):
    """A site's origin, `http(s)://host[:port]`, as a browser sends it in `Origin`."""

    def __init__(self, **options: Any):
        super().__init__(300, **options)

    def check(self, value: Any, where: str) -> str:
        value = super().check(value, where)
        match = _ORIGIN.match(value)
        if match is None or (match[2] and not 0 < int(match[2][1:]) < 65536):
            raise Invalid(
                where,
                f"{value[:80]!r} is not an origin: http:// or https://, a host and an optional "
                "port, nothing after (e.g. https://shop.example:8443)",
            )
        return value

    def describe(self) -> dict:
        return {**super().describe(), "pattern": _ORIGIN.pattern}


class Slug(Field):
    """An id chosen by a person (a tenant's): lower-case letters, digits, - and _."""

    PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

    def check(self, value: Any, where: str) -> str:
        if not isinstance(value, str) or not re.match(self.PATTERN, value):
            raise Invalid(where, "must be 1-64 lower-case letters, digits, '-' or '_'")
        return value

    def describe(self) -> dict:
        return {"type": "string", "pattern": self.PATTERN}


def is_e164(value: str) -> bool:
    """A number written in E.164 (`+` and digits, as stored) that can exist (Google's
    libphonenumber rules, through the `phonenumbers` package)."""
    if not re.fullmatch(r"\+[1-9]\d{1,14}", value):
        return False
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


class Phone(Field):
    """A phone number in E.164 form that can exist; an email address is recognised, to
    say that it cannot be called or texted."""

    PATTERN = r"^\+[1-9]\d{1,14}$"
    EXAMPLE = "e.g. +34911234567"

    def check(self, value: Any, where: str) -> str:
        if isinstance(value, str) and "@" in value:
            raise Invalid(
                where,
                f"an email address cannot be called or texted: give a phone number in "
                f"E.164 form, {self.EXAMPLE}",
            )
        if not isinstance(value, str) or not is_e164(value):
            raise Invalid(where, f"must be a valid phone number in E.164 form, {self.EXAMPLE}")
        return value

    def describe(self) -> dict:
        return {"type": "string", "pattern": self.PATTERN, "description": f"E.164, {self.EXAMPLE}"}


class BusinessHours(Field):
    """`"always"`, or `{"mon": ["09:00-13:00", ...], ..., "holidays": ["2026-12-25"]}`
    (a day left out is closed)."""

    DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    RANGE = r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$"

    def check(self, value: Any, where: str) -> Any:
        if value == "always":
            return value
        if not isinstance(value, dict):
            raise Invalid(where, 'must be "always" or a weekly schedule object')
        unknown_keys(value, {*self.DAYS, "holidays"})
        for day in self.DAYS:
            ranges = value.get(day, [])
            if not isinstance(ranges, list):
                raise Invalid(f"{where}.{day}", 'must be a list of "HH:MM-HH:MM" ranges')
            for item in ranges:
                match = re.match(self.RANGE, item) if isinstance(item, str) else None
                if not match or item[:5] >= item[6:]:
                    raise Invalid(f"{where}.{day}", f'{item!r} is not a range like "09:00-17:30"')
        holidays = value.get("holidays", [])
        if not isinstance(holidays, list):
            raise Invalid(f"{where}.holidays", "must be a list of YYYY-MM-DD dates")
        for item in holidays:
            try:
                date.fromisoformat(item)
            except (TypeError, ValueError):
                raise Invalid(f"{where}.holidays", f"{item!r} is not a YYYY-MM-DD date") from None
        return value

    def describe(self) -> dict:
        return {"oneOf": [{"type": "string", "enum": ["always"]}, ref("WeeklySchedule")]}

    @classmethod
    def weekly_schedule(cls) -> dict:
        """The schema of the schedule object (the component WeeklySchedule)."""
        hours = {"type": "string", "pattern": cls.RANGE}
        return {
            "type": "object",
            "properties": {
                **{day: {"type": "array", "items": hours} for day in cls.DAYS},
                "holidays": {"type": "array", "items": {"type": "string", "format": "date"}},
            },
            "additionalProperties": False,
            "description": "Weekly opening hours in the tenant's time zone; a day left out "
            "is closed; each range starts before it ends.",
        }


class Object(Field):
    """An object of named fields: a request body, a websocket frame, an item of a list.

    `read(body)` gives the fields present, checked, in declared order; a key no field
    declares is refused (unless `closed=False`), and so is a `required` one left out.
    `defaults=True` fills in the defaults of fields left out; `refusal` is the code of
    the refusal (invalid_field)."""

    def __init__(
        self,
        *,
        required: tuple[str, ...] = (),
        closed: bool = True,
        defaults: bool = False,
        refusal: str = "invalid_field",
        nullable: bool = False,
        description: str = "",
        **fields: Field,
    ):
        super().__init__(nullable=nullable, description=description)
        unknown = set(required) - set(fields)
        assert not unknown, f"required fields not declared: {unknown}"
        self.fields = fields
        self.required = tuple(required)
        self.closed = closed
        self.defaults = defaults
        self.code = refusal

    def read(self, value: Any, where: str = "") -> dict[str, Any]:
        if not where and not isinstance(value, dict):
            raise Refused("malformed", "the body must be an object")
        return super().read(value, where)

    def check(self, value: Any, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid(where, "must be an object")
        if self.closed:
            unknown_keys(value, self.fields)
        values = {}
        for name, field in self.fields.items():
            path = f"{where}.{name}" if where else name
            item = value.get(name, MISSING)
            if item is not MISSING:
                values[name] = field.take(item, path)
            elif name in self.required:
                raise Invalid(path, "is required")
            elif self.defaults and field.default is not MISSING:
                values[name] = copy.deepcopy(field.default)
        return values

    def partial(self) -> Object:
        """The same fields, none required (a change of what exists: PATCH)."""
        other = copy.copy(self)
        other.required = ()
        return other

    def describe(self) -> dict:
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: field.schema() for name, field in self.fields.items()},
        }
        if self.required:
            schema["required"] = list(self.required)
        if self.closed:
            schema["additionalProperties"] = False
        return schema
