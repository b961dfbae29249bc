"""Conversation rows as clients see them: the columns of the product's view (labels
for a column chooser), times as RFC 3339 instants and the created date and time in
the tenant's time zone. One projection makes them from a stored row, for every
reader: HTTP pages, the detail, websocket snapshots and deltas, popups.

The projection is total: a stored value it cannot show (a created_at whose date in the
tenant's zone lies past year 9999, left by a server that let such instants in) is shown
as null, and logged once per row and column, so that one row never takes down a page,
a view or a socket (docs/security.md "Bounded input")."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from server.storage import models as m
from server.storage.repository import decode_channels

log = logging.getLogger("switchboard.rows")

# The view columns and their labels, in the order a column chooser lists them.
COLUMNS: dict[str, str] = {
    "id": "Conversation ID",
    "customer_name": "Customer Name",
    "created_date": "Created date",
    "created_time": "Created time",
    "created_at": "Created (UTC instant)",
    "agent_name": "Agent Name",
    "agent_id": "Agent ID",
    "team": "Team",
    "direction": "Conversation Direction",
    "disposition": "Disposition",
    "state": "Conversation state",
    "wrap_up_note": "Wrap-up note",
    "channel": "Channel",
    "channels": "Channels used",
    "contact": "Contact",
    "contacto_number": "Contact-center phone number",
    "ticket_id": "Ticket ID",
    "csat": "CSAT",
    "hangup_source": "Hangup Source",
    "status": "Status",
    "has_recording": "Recording",
    "wait_s": "Wait time",
    "handle_s": "Handle time",
}
# Every name of a whole wire row: the columns, the version, the lifecycle instants.
WIRE_NAMES = (*COLUMNS, "version", "queued_at", "answered_at", "ended_at", "closed_at")
# Wire names made from another stored column than their own.
STORED_AS = {"created_date": "created_at", "created_time": "created_at"}


def instant(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds, e.g. 2026-11-24T10:00:00.123Z."""
    if value is None:
        return None
    return (
        value.astimezone(ZoneInfo("UTC")).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def _instant(value, tz):
    return instant(value)


def _copied(value, tz):
    return value


MAKERS = {
    "created_at": _instant,
    "queued_at": _instant,
    "answered_at": _instant,
    "ended_at": _instant,
    "closed_at": _instant,
    "created_date": lambda value, tz: value.astimezone(tz).date().isoformat(),
    "created_time": lambda value, tz: value.astimezone(tz).time().isoformat(timespec="seconds"),
    "channels": lambda value, tz: decode_channels(value),
    "has_recording": lambda value, tz: bool(value),
}


def shown_as(stored: str) -> tuple[str, ...]:
    """The wire names a stored column's change shows in."""
    return (stored, *(name for name, source in STORED_AS.items() if source == stored))


@dataclass(frozen=True)
class Projection:
    """Some wire names: the stored columns they are made of, and how each is made."""

    names: tuple[str, ...]  # wire names, in the order they are sent
    stored: tuple[str, ...]  # the stored columns they need
    makers: tuple  # per wire name: (stored column, maker(value, tz))

    @property
    def selected(self) -> tuple:
        """The stored columns, as the table's Column objects (what a page selects)."""
        return tuple(m.conversations.c[name] for name in self.stored)

    def wire(self, row: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
        try:
            return {
                name: make(row[stored], tz)
                for name, (stored, make) in zip(self.names, self.makers, strict=True)
            }
        except Exception:  # a stored value that cannot be shown: see _shown
            return {
                name: _shown(row, name, stored, make, tz)
                for name, (stored, make) in zip(self.names, self.makers, strict=True)
            }


UNSHOWN_LOGGED = 1000  # (row, column) pairs remembered so that each is logged once
_unshown: dict[tuple, None] = {}


def _shown(row: Mapping[str, Any], name: str, stored: str, make, tz: ZoneInfo) -> Any:
    """One wire value, or None for a stored value that cannot be shown."""
    try:
        return make(row[stored], tz)
    except Exception:
        key = (row.get("id"), name)
        if key not in _unshown:
            _unshown[key] = None
            if len(_unshown) > UNSHOWN_LOGGED:
                del _unshown[next(iter(_unshown))]
            log.warning(
                "a stored value cannot be shown: %s of conversation %r is null",
                name,
                str(row.get("id"))[:200],
                exc_info=True,
                extra={"tenant": row.get("tenant_id")},
            )
        return None


@functools.lru_cache(maxsize=1024)
def projection(names: tuple[str, ...]) -> Projection:
    stored = tuple(dict.fromkeys(STORED_AS.get(name, name) for name in names))
    makers = tuple((STORED_AS.get(name, name), MAKERS.get(name, _copied)) for name in names)
    return Projection(names, stored, makers)


def view_projection(columns: tuple[str, ...], sort_fields: tuple[str, ...]) -> Projection:
    """What a view's client gets of a row: its columns, plus id, version and the sort
    keys (shown or not) so that it can place the row."""
    return projection(tuple(dict.fromkeys(("id", "version", *columns, *sort_fields))))


EVERY = projection(WIRE_NAMES)


def wire_row(row: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    """Every column of a stored conversation, plus its version and lifecycle instants."""
    return EVERY.wire(row, tz)


def project(row: Mapping[str, Any], columns, sort_fields, tz: ZoneInfo) -> dict[str, Any]:
    """A stored row as a client of a view sees it (view_projection)."""
    return view_projection(tuple(columns), tuple(sort_fields)).wire(row, tz)
