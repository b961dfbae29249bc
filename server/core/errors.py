"""What a service answers when it will not do what it is asked.

`Refused` says it in the wire's words: a `code` from the API's error codes and a
`message` that names what is wrong (the field, or the status and the event). Services
raise it whatever the transport; the edge turns it into an HTTP status (a table of
codes, server/edge/errors.py) or a websocket `error` frame. Nothing below the edge
knows HTTP.
"""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """`extra`: more keys of the error body (the field at fault, the conversation's
    current row). `retry_after_s`: when trying again may succeed."""

    def __init__(
        self, code: str, message: str, *, retry_after_s: float | None = None, **extra: Any
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_s = retry_after_s
        self.extra = extra


def invalid(field: str, message: str) -> Refused:
    """A request field that cannot be taken: 422 `invalid_field`, naming it."""
    return Refused("invalid_field", f"{field}: {message}", field=field)
