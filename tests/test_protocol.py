"""The websocket protocol as server/wire/protocol.py declares it (and /openapi.json
publishes it) is the one `/ws` speaks: a frame for every handler and a handler for
every frame; over a real socket on both backends, a session that sends every kind of
client frame sends only what the client frames' schemas take and receives only what
the server frames' schemas describe; a frame is read with its schema as a body is."""

from __future__ import annotations

import itertools

import jsonschema_rs
import pytest

from server.core.errors import Refused
from server.edge.ws import connection
from server.openapi.document import openapi_document
from server.openapi.websocket import client_frame, server_frame
from server.wire.protocol import CLIENT_FRAMES, CLOSE_CODES, SERVER_FRAMES, SUBPROTOCOLS
from tests.routing_support import arrive, builtin_routing, put_agent, put_team
from tests.server_support import WsClient, live_server


def test_every_client_frame_has_a_handler_and_every_handler_a_frame():
    assert set(CLIENT_FRAMES) == set(connection.HANDLERS)


def test_the_socket_uses_the_declared_subprotocols_limits_and_close_codes():
    assert connection.SUBPROTOCOLS is SUBPROTOCOLS  # the socket's own are the declared ones
    assert {connection.CLOSE_TOKEN_EXPIRED, connection.CLOSE_TRY_AGAIN_LATER} <= set(CLOSE_CODES)


def test_a_frame_is_read_with_its_schema():
    fetch = CLIENT_FRAMES["fetch"]
    assert fetch.read({"type": "fetch", "sub": "s1", "extra": 1}) == {"sub": "s1", "limit": 100}
    assert fetch.read({"type": "fetch", "ref": 7, "sub": "s1", "limit": 3})["limit"] == 3
    with pytest.raises(Refused) as info:
        CLIENT_FRAMES["subscribe"].read({"type": "subscribe", "view": {}, "limit": -1})
    assert (info.value.code, info.value.message) == (
        "invalid_field",
        "limit: must be an integer from 0 to 1000",
    )
    initiate = CLIENT_FRAMES["initiate"].read(
        {"type": "initiate", "ref": "1", "idempotency_key": "k", "channel": "call", "x": 1}
    )
    assert initiate == {"ref": "1", "idempotency_key": "k", "body": {"channel": "call", "x": 1}}


def validators(name, frames) -> dict[str, jsonschema_rs.Validator]:
    components = openapi_document()["components"]
    return {
        type_: jsonschema_rs.validator_for(
            {"$ref": f"#/components/schemas/{name(type_)}", "components": components}
        )
        for type_ in frames
    }


def nonconforming(frames: list[dict], valid: dict) -> list[tuple[dict, list[str]]]:
    wrong = []
    for frame in frames:
        check = valid.get(frame.get("type"))
        errors = [e.message for e in check.iter_errors(frame)] if check else ["unknown type"]
        if errors:
            wrong.append((frame, errors))
    return wrong


async def test_a_session_sends_and_receives_only_declared_frames(backend, tmp_path):
    sent: list[dict] = []
    refs = itertools.count(1)

    async def ask(ws: WsClient, frame: dict) -> dict:
        frame = {**frame, "ref": f"t{next(refs)}"}
        sent.append(frame)
        await ws.send(frame)
        return await ws.wait(lambda f: f.get("ref") == frame["ref"])

    async with live_server(backend, tmp_path / "data") as server:
        api = server.api
        await builtin_routing(api)
        await put_team(api, "desk", queue_timeout_s=600)
        await put_agent(api, "p1", ["desk"])
        async with (
            server.ws("agent", "p1") as agent,
            server.ws("supervisor", "sup1") as sup,
            server.ws("wallboard", "wb1") as board,
        ):
            assert (await ask(agent, {"type": "presence", "presence": "available"}))["type"] == "ok"
            assert (await ask(agent, {"type": "subscribe_popups"}))["type"] == "ok"
            wallboard = await ask(board, {"type": "subscribe_wallboard", "teams": ["desk"]})
            assert wallboard["type"] == "wallboard"
            view = {"filters": [{"field": "team", "op": "eq", "value": "desk"}], "columns": ["id"]}
            snapshot = await ask(sup, {"type": "subscribe", "view": view, "limit": 1})
            sub = snapshot["sub"]

            cid = await arrive(api, "desk", channel="chat")
            popup = await agent.wait(lambda f: f["type"] == "popup")
            assert (await ask(agent, {"type": "accept", "offer_id": popup["offer_id"]}))[
                "type"
            ] == "ok"
            await agent.wait(lambda f: f["type"] == "popup_closed")
            reply = {"type": "send_message", "conversation_id": cid, "text": "Hello"}
            assert (await ask(agent, reply))["type"] == "ok"
            await sup.wait(lambda f: f["type"] == "delta" and f["sub"] == sub)
            assert (await ask(sup, {"type": "fetch", "sub": sub, "limit": 5}))["type"] == "page"
            assert (await ask(agent, {"type": "hangup", "conversation_id": cid}))["type"] == "ok"
            transfer = {"type": "transfer", "conversation_id": cid, "team": "desk"}
            refused = await ask(sup, transfer)
            assert refused["type"] == "error" and refused["conversation"]["id"] == cid

            second = await arrive(api, "desk", channel="chat")
            popup = await agent.wait(
                lambda f: f["type"] == "popup" and f["conversation"]["id"] == second
            )
            assert (await ask(agent, {"type": "reject", "offer_id": popup["offer_id"]}))[
                "type"
            ] == "ok"
            initiate = {
                "type": "initiate",
                "idempotency_key": "k1",
                "channel": "sms",
                "contact": "+34911000121",
                "text": "Hi",
            }
            assert (await ask(agent, initiate))["type"] in ("ok", "error")
            assert (await ask(sup, {"type": "ping"}))["type"] == "pong"
            assert (await ask(sup, {"type": "unsubscribe", "sub": sub}))["type"] == "ok"
            assert (await ask(sup, {"type": "fetch", "sub": sub}))["type"] == "error"
            await agent.wait(lambda f: f["type"] == "popup_closed" and f["reason"] == "rejected")
            received = agent.frames + sup.frames + board.frames

    assert {f["type"] for f in sent} == set(CLIENT_FRAMES)
    seen = {f["type"] for f in received}
    assert seen >= set(SERVER_FRAMES) - {"resync", "unsubscribed"}, seen
    assert not nonconforming(sent, validators(client_frame, CLIENT_FRAMES))
    assert not nonconforming(received, validators(server_frame, SERVER_FRAMES))
