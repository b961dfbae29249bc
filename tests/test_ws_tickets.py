"""Websocket tickets (issue 17, finding 1): `POST /api/v1/ws-tickets` answers a ticket
that opens `/ws?ticket=` once, within 30 s, as the token that asked for it, on any
process of those sharing the database; only its hash is stored. `?token=` still works
for programs."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server.storage import models as m
from server.storage.db import Database
from tests.app_support import prepare_database
from tests.server_support import live_server, spawned_server
from tests.support import ManualClock

JSON_PROTOCOL = "switchboard.v1.json"


async def ticket_for(api, role: str = "supervisor", user: str = "sup1", **kw) -> str:
    headers = {"Authorization": f"Bearer {api.token(role, user, **kw)}"}
    response = await api.client.post("/api/v1/ws-tickets", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"ticket", "expires_in"} and body["expires_in"] == 30, body
    assert response.headers["cache-control"] == "no-store"
    return body["ticket"]


@contextlib.asynccontextmanager
async def socket(url: str):
    async with connect(url, subprotocols=[JSON_PROTOCOL]) as ws:
        yield ws


async def request(ws, frame: dict) -> dict:
    await ws.send(json.dumps({**frame, "ref": "q"}))
    while True:
        answer = json.loads(await ws.recv())
        if answer.get("ref") == "q":
            return answer


async def refused(url: str) -> dict:
    with pytest.raises(InvalidStatus) as info:
        async with socket(url):
            pass
    assert info.value.response.status_code == 401, info.value.response.body
    return json.loads(info.value.response.body)["error"]


INLINE = {"filters": [], "sort": [{"field": "created_at", "dir": "desc"}]}


async def test_a_ticket_opens_one_socket_as_its_tokens_principal(backend, tmp_path):
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    async with live_server(backend, tmp_path / "data", clock) as server:
        api = server.api
        for role in ("admin", "supervisor", "agent", "wallboard", "service"):
            assert await ticket_for(api, role, "u9")
        for headers in ({}, {"Authorization": "Bearer nope"}):
            response = await api.client.post("/api/v1/ws-tickets", headers=headers)
            assert response.status_code == 401, response.text

        ticket = await ticket_for(api, "supervisor", "sup1")
        url = f"{server.ws_url}?ticket={ticket}"
        async with socket(url) as ws:
            snapshot = await request(ws, {"type": "subscribe", "view": INLINE})
            assert snapshot["type"] == "snapshot", snapshot
        error = await refused(url)  # once only
        assert error["code"] == "unauthorized" and "ticket" in error["message"], error
        assert ticket not in json.dumps(error)

        # The principal is the token's: a wallboard ticket may not subscribe to views.
        async with socket(f"{server.ws_url}?ticket={await ticket_for(api, 'wallboard')}") as ws:
            answer = await request(ws, {"type": "subscribe", "view": INLINE})
            assert answer["type"] == "error" and answer["code"] == "forbidden", answer
            assert "wallboard" in answer["message"]

        # Good for 30 seconds, and never past its token. (Tokens and tickets are made
        # now: a token minted after the clock moved would not be valid yet.)
        late, in_time = await ticket_for(api), await ticket_for(api)
        short = await ticket_for(api, ttl=10)
        program = api.token("supervisor", "sup1")
        clock.advance(timedelta(seconds=11))
        assert "token expired" in (await refused(f"{server.ws_url}?ticket={short}"))["message"]
        clock.advance(timedelta(seconds=18))
        async with socket(f"{server.ws_url}?ticket={in_time}") as ws:
            assert (await request(ws, {"type": "ping"}))["type"] == "pong"
        clock.advance(timedelta(seconds=2))
        assert "expired" in (await refused(f"{server.ws_url}?ticket={late}"))["message"]

        # Nothing else opens a socket: garbage, an empty or an oversized ticket.
        for bad in ("garbage", "", "x" * 5000):
            await refused(f"{server.ws_url}?ticket={bad}")
        # ?token= still works for programs.
        async with socket(f"{server.ws_url}?token={program}") as ws:
            assert (await request(ws, {"type": "ping"}))["type"] == "pong"


async def test_only_a_hash_is_stored_and_used_tickets_are_gone(backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        ticket = await ticket_for(server.api)
        rows = await stored(server.api.services.db)
        assert len(rows) == 1
        assert ticket not in json.dumps(rows, default=str)
        assert rows[0]["ticket_hash"] == hashlib.sha256(ticket.encode()).hexdigest()
        assert (rows[0]["tenant_id"], rows[0]["user_id"], rows[0]["role"]) == (
            "acme",
            "sup1",
            "supervisor",
        )
        async with socket(f"{server.ws_url}?ticket={ticket}"):
            pass
        assert await stored(server.api.services.db) == []


async def stored(db: Database) -> list[dict]:
    async with db.read() as conn:
        result = await conn.execute(select(m.ws_tickets))
        return [dict(row._mapping) for row in result]


async def test_a_ticket_from_one_process_opens_a_socket_on_another(backend, tmp_path):
    await prepare_database(backend.database_url)
    async with (
        spawned_server(backend, tmp_path / "one") as one,
        spawned_server(backend, tmp_path / "two") as two,
    ):
        ticket = await ticket_for(one.api)
        async with socket(f"{two.ws_url}?ticket={ticket}") as ws:
            snapshot = await request(ws, {"type": "subscribe", "view": INLINE})
            assert snapshot["type"] == "snapshot", snapshot
        await refused(f"{one.ws_url}?ticket={ticket}")  # used, on every process
