"""Contacts as the API takes them: phone numbers are checked by the Phone field
(server/core/fields.py, E.164 with libphonenumber's rules); an email address is
recognised here, for web chat visitors who leave one."""

from __future__ import annotations

import re

# Deliberately simple: one @, no spaces, a dot in the domain. Deliverability is the
# provider's business; this catches typos and non-addresses.
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
