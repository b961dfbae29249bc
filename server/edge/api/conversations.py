"""GET /api/v1/conversations/{id}: the row and everything a detail page shows."""

from __future__ import annotations

from starlette.requests import Request

from server.core.auth import sees_conversation
from server.core.errors import Refused
from server.edge.http import principal_of, respond
from server.storage import models as m
from server.storage import repository as repo
from server.wire.rows import instant, wire_row


async def get_conversation(request: Request):
    services = request.app.state.services
    principal = await principal_of(request)
    principal.require("supervisor", "admin", "agent")
    conversation_id = request.path_params["conversation_id"]
    tenant = principal.tenant
    if "\x00" in conversation_id:  # no stored id has one; PostgreSQL cannot even compare it
        raise Refused("not_found", f"no conversation {conversation_id!r}")
    async with services.db.read() as conn:
        row = await repo.get_conversation_row(conn, tenant, conversation_id)
        if row is None or not sees_conversation(principal, row):
            raise Refused("not_found", f"no conversation {conversation_id!r}")
        customer = await repo.get_customer(conn, tenant, row["customer_id"] or row["contact"])
        transcript = await repo.rows_of(
            conn, m.messages, tenant, conversation_id, [m.messages.c.at, m.messages.c.message_id]
        )
        tickets = await repo.rows_of(
            conn, m.tickets, tenant, conversation_id, [m.tickets.c.linked_at, m.tickets.c.ticket_id]
        )
        recordings = await repo.rows_of(
            conn,
            m.recordings,
            tenant,
            conversation_id,
            [m.recordings.c.created_at, m.recordings.c.id],
        )
        timeline = await repo.timeline(conn, tenant, conversation_id)
    tz = await services.tenants.zone(tenant)
    return respond(
        request,
        {
            "conversation": wire_row(row, tz),
            "customer": {
                "id": row["customer_id"] or row["contact"],
                "name": (customer or {}).get("name", row["customer_name"]),
                "email": (customer or {}).get("email", row["customer_email"]),
                "phone": (customer or {}).get("phone", row["customer_phone"]),
                "contact": row["contact"],
            },
            "transcript": [
                {
                    "message_id": item["message_id"],
                    "sender": item["sender"],
                    "text": item["text"],
                    "at": instant(item["at"]),
                    "status": item["status"],
                }
                for item in transcript
            ],
            "tickets": [
                {
                    "ticket_id": item["ticket_id"],
                    "system": item["system"],
                    "url": item["url"],
                    "linked_at": instant(item["linked_at"]),
                }
                for item in tickets
            ],
            "recordings": [
                {
                    "id": item["id"],
                    "duration_s": item["duration_s"],
                    "content_type": item["content_type"],
                    "created_at": instant(item["created_at"]),
                }
                for item in recordings
            ],
            "timeline": [
                {
                    "event_id": item["event_id"],
                    "type": item["type"],
                    "occurred_at": instant(item["occurred_at"]),
                    "received_at": instant(item["received_at"]),
                    "outcome": item["outcome"],
                    "version": item["version"],
                    "message": item["message"],
                    "data": item["data"],
                }
                for item in timeline
            ],
        },
    )
