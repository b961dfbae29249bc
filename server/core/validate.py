"""Checks for request bodies: each raises a 422 that names the field."""

from __future__ import annotations

import re
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.core.errors import Refused

MISSING = object()


def invalid(field: str, message: str) -> Refused:
    return Refused("invalid_field", f"{field}: {message}", field=field)


def unknown_fields(body: dict, allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise invalid(extra[0], f"unknown field (allowed: {', '.join(sorted(allowed))})")


def integer(body: dict, field: str, minimum: int = 0, maximum: int = 10**9) -> Any:
    value = body.get(field, MISSING)
    if value is MISSING:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer")
    if not minimum <= value <= maximum:
        raise invalid(field, f"must be from {minimum} to {maximum}")
    return value


def optional_integer(body: dict, field: str, minimum: int = 0, maximum: int = 10**9) -> Any:
    if field in body and body[field] is None:
        return None
    return integer(body, field, minimum, maximum)


def boolean(body: dict, field: str) -> Any:
    value = body.get(field, MISSING)
    if value is not MISSING and not isinstance(value, bool):
        raise invalid(field, "must be true or false")
    return value


def string(body: dict, field: str, max_length: int = 1000, optional: bool = False) -> Any:
    value = body.get(field, MISSING)
    if value is MISSING or (optional and value is None):
        return value
    if not isinstance(value, str) or not value.strip():
        raise invalid(field, "must be a non-empty string")
    if len(value) > max_length:
        raise invalid(field, f"must be at most {max_length} characters")
    if "\x00" in value:  # PostgreSQL text cannot hold it
        raise invalid(field, "must not contain NUL characters")
    return value


def choice(body: dict, field: str, choices: tuple[str, ...]) -> Any:
    value = body.get(field, MISSING)
    if value is not MISSING and value not in choices:
        raise invalid(field, f"must be one of {', '.join(choices)}")
    return value


def string_list(body: dict, field: str, max_items: int = 100) -> Any:
    value = body.get(field, MISSING)
    if value is MISSING:
        return value
    if not isinstance(value, list) or len(value) > max_items:
        raise invalid(field, f"must be a list of at most {max_items} strings")
    for item in value:
        if not isinstance(item, str) or not item.strip() or len(item) > 200 or "\x00" in item:
            raise invalid(
                field,
                "every item must be a non-empty string of at most 200 characters, without NUL",
            )
    return value


def timezone_name(body: dict, field: str) -> Any:
    value = string(body, field, 64)
    if value is MISSING:
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid(field, f"{value!r} is not an IANA time zone such as Europe/Madrid") from None
    return value


SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def slug(value: str, field: str) -> str:
    if not SLUG.match(value):
        raise invalid(field, "must be 1-64 lower-case letters, digits, '-' or '_'")
    return value


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RANGE = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


def business_hours(body: dict, field: str = "business_hours") -> Any:
    """`"always"`, or `{"mon": ["09:00-13:00", ...], ..., "holidays": ["2026-12-25"]}`."""
    value = body.get(field, MISSING)
    if value is MISSING or value == "always":
        return value
    if not isinstance(value, dict):
        raise invalid(field, 'must be "always" or a weekly schedule object')
    unknown_fields(value, {*DAYS, "holidays"})
    for day in DAYS:
        ranges = value.get(day, [])
        if not isinstance(ranges, list):
            raise invalid(f"{field}.{day}", 'must be a list of "HH:MM-HH:MM" ranges')
        for item in ranges:
            match = RANGE.match(item) if isinstance(item, str) else None
            if not match or item[:5] >= item[6:]:
                raise invalid(f"{field}.{day}", f'{item!r} is not a range like "09:00-17:30"')
    holidays = value.get("holidays", [])
    if not isinstance(holidays, list):
        raise invalid(f"{field}.holidays", "must be a list of YYYY-MM-DD dates")
    for item in holidays:
        try:
            date.fromisoformat(item)
        except (TypeError, ValueError):
            raise invalid(f"{field}.holidays", f"{item!r} is not a YYYY-MM-DD date") from None
    return value


def present(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not MISSING}
