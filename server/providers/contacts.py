"""Contacts as api.md takes them: E.164 phone numbers (checked with Google's
libphonenumber rules, through the `phonenumbers` package); an email address is
recognised to say that it cannot be called or texted."""

from __future__ import annotations

import re

import phonenumbers

from server.core.validate import invalid

# Deliberately simple: one @, no spaces, a dot in the domain. Deliverability is the
# provider's business; this catches typos and non-addresses.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")


def is_e164(value: str) -> bool:
    """A number written in E.164 (`+` and digits, as stored) that can exist."""
    if not re.fullmatch(r"\+[1-9]\d{1,14}", value):
        return False
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number)


def phone(value, field: str) -> str:
    if not isinstance(value, str) or not is_e164(value):
        raise invalid(field, "must be a valid phone number in E.164 form, e.g. +34911234567")
    return value
