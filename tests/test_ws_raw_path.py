"""/ws pushes through our uvicorn protocol's fast path (server/edge/ws/protocol.py,
docs/websocket-server.md): every frame a client gets was written by `write`, none went
through ASGI `websocket.send`; a delta is encoded once per format and its body handed
to every socket as the same object. Under another ASGI server (here uvicorn's own
websocket protocol) /ws and /webchat work over plain ASGI, and the log says so once."""

from __future__ import annotations

import contextlib
import json
import logging

import msgpack

from server.edge.ws import session as ws_session
from server.edge.ws.protocol import SocketProtocol
from server.live import windows
from tests.server_support import live_server
from tests.test_webchat import set_up, visitor_socket
from tests.test_ws_protocol import created, delta_with, post, subscribe

VIEW = {"filters": [{"field": "channel", "op": "in", "value": ["chat"]}], "columns": ["status"]}


async def test_every_frame_goes_out_through_the_fast_path(backend, tmp_path, monkeypatch):
    written: list[tuple[bytes, bool]] = []
    asgi: list[str] = []
    write, send = SocketProtocol.write, SocketProtocol.send

    def spy_write(self, parts, text):
        written.append((b"".join(parts), text))
        write(self, parts, text)

    async def spy_send(self, message):
        asgi.append(message["type"])
        await send(self, message)

    monkeypatch.setattr(SocketProtocol, "write", spy_write)
    monkeypatch.setattr(SocketProtocol, "send", spy_send)
    async with (
        live_server(backend, tmp_path) as server,
        server.ws() as text,
        server.ws(format="msgpack") as binary,
    ):
        for client in (text, binary):
            assert (await client.request({"type": "ping"}))["type"] == "pong"
        snapshots = [await subscribe(client, VIEW) for client in (text, binary)]
        await post(server.api, [created(server.api, "c1", 1)])
        for client, snapshot in zip((text, binary), snapshots, strict=True):
            await delta_with(client, snapshot["sub"], "c1")

        # What each client holds is exactly what `write` wrote, as text frames for
        # JSON and binary frames for msgpack; ASGI carried the accepts alone.
        assert [json.loads(data) for data, is_text in written if is_text] == text.frames
        assert [
            msgpack.unpackb(data, timestamp=3) for data, is_text in written if not is_text
        ] == binary.frames
        assert len(written) == len(text.frames) + len(binary.frames) == 6
        assert asgi == ["websocket.accept", "websocket.accept"]


async def test_a_delta_is_encoded_once_and_its_body_shared(backend, tmp_path, monkeypatch):
    encoded: list = []
    written: list[tuple[bytes, ...]] = []
    encode_body, write = windows.encode_body, SocketProtocol.write

    def counting(format, keys):
        encoded.append(encode_body(format, keys))
        return encoded[-1]

    def spy_write(self, parts, text):
        written.append(tuple(parts))
        write(self, parts, text)

    monkeypatch.setattr(windows, "encode_body", counting)
    monkeypatch.setattr(SocketProtocol, "write", spy_write)
    async with live_server(backend, tmp_path) as server, contextlib.AsyncExitStack() as stack:
        formats = ["json", "json", "json", "msgpack", "msgpack"]
        clients = [await stack.enter_async_context(server.ws(format=f)) for f in formats]
        subs = [(await subscribe(client, VIEW))["sub"] for client in clients]
        await post(server.api, [created(server.api, "c1", 1)])
        for client, sub in zip(clients, subs, strict=True):
            await delta_with(client, sub, "c1")
    assert sorted(body.format for body in encoded) == ["json", "msgpack"]  # once each
    deltas = [parts for parts in written if len(parts) == 2]  # a header, then the body
    assert len(deltas) == len(clients)
    for body in encoded:
        shared = [parts[1] for parts in deltas if parts[1] == body.body]
        assert len(shared) == formats.count(body.format)
        assert all(part is body.body for part in shared)  # the same bytes, not copies


async def test_under_another_server_sockets_work_over_plain_asgi(
    backend, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(ws_session, "_told_plain_asgi", False)
    caplog.set_level(logging.INFO, logger="switchboard.ws")
    async with live_server(
        backend, tmp_path, uvicorn_changes={"ws": "websockets-sansio"}
    ) as server:
        async with server.ws() as first, server.ws(format="msgpack") as second:
            for client in (first, second):
                assert (await client.request({"type": "ping"}))["type"] == "pong"
            snapshot = await subscribe(second, VIEW)
            await post(server.api, [created(server.api, "c1", 1)])
            delta = await delta_with(second, snapshot["sub"], "c1")
            assert delta["seq"] == 1
        await set_up(server)
        async with visitor_socket(server, hello={}) as visitor:
            await visitor.wait(lambda f: f["type"] == "status")
    told = [r for r in caplog.records if "plain ASGI" in r.getMessage()]
    assert len(told) == 1 and told[0].levelno == logging.INFO
