"""Conversation rows as clients see them: domain.md's columns, times in the tenant's
time zone."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from server.storage.repository import decode_channels

# domain.md's view columns and their labels, in the order a column chooser lists them.
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

_COPIED = (
    "id",
    "customer_name",
    "agent_name",
    "agent_id",
    "team",
    "direction",
    "disposition",
    "state",
    "wrap_up_note",
    "channel",
    "contact",
    "contacto_number",
    "ticket_id",
    "csat",
    "hangup_source",
    "status",
    "has_recording",
    "wait_s",
    "handle_s",
    "version",
)
_INSTANTS = ("created_at", "queued_at", "answered_at", "ended_at", "closed_at")


def instant(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with milliseconds, e.g. 2026-11-24T10:00:00.123Z."""
    if value is None:
        return None
    return (
        value.astimezone(ZoneInfo("UTC")).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def wire_row(row: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    """Every column of a stored conversation, plus its version and lifecycle instants."""
    wire = {name: row[name] for name in _COPIED}
    wire["has_recording"] = bool(row["has_recording"])
    wire["channels"] = decode_channels(row["channels"])
    for name in _INSTANTS:
        wire[name] = instant(row[name])
    local = row["created_at"].astimezone(tz)
    wire["created_date"] = local.date().isoformat()
    wire["created_time"] = local.time().isoformat(timespec="seconds")
    return wire
