"""Data for the page tests: conversations created now, saved views, and waits on
what a page shows."""

from __future__ import annotations

import itertools
import secrets

from tests.app_support import Api
from tests.routing_support import now_iso

_numbers = itertools.count(1)


def new_id() -> str:
    return f"c-{secrets.token_hex(5)}"


async def arrive(
    api: Api,
    channel: str = "chat",
    name: str | None = None,
    contact: str | None = None,
    cid: str | None = None,
    at: str | None = None,
    **data,
) -> str:
    """An inbound conversation created `at` (default now); returns its id."""
    cid = cid or new_id()
    event = api.event(
        "conversation.created",
        cid,
        at or now_iso(),
        channel=channel,
        contact=contact or f"+3491200{next(_numbers):04d}",
        customer={"name": name if name is not None else f"Customer {cid}"},
        **data,
    )
    # Ids of our own: two Api objects (a server started again) count from 1 each.
    [result] = await api.post_events([{**event, "event_id": f"pg-{secrets.token_hex(6)}"}])
    assert result["outcome"] == "applied", result
    return cid


async def post(api: Api, cid: str, type_: str, **data) -> dict:
    event = {**api.event(type_, cid, now_iso(), **data), "event_id": f"pg-{secrets.token_hex(6)}"}
    [result] = await api.post_events([event])
    assert result["outcome"] == "applied", result
    return result


async def saved_view(api: Api, user: str = "sup1", **fields) -> dict:
    body = {"name": "Everything", "filters": [], "columns": ["id", "customer_name", "status"]}
    body.update(fields)
    response = await api.client.post(
        "/api/v1/views", json=body, headers=api.auth("supervisor", user)
    )
    assert response.status_code == 201, response.text
    return response.json()
