"""Our uvicorn websocket protocol (server/edge/ws/protocol.py) against websockets' own
sans-I/O client, over a transport that records what it is given: the ASGI websocket
interface, RFC 6455's closing handshake and limits, flow control both ways, keepalive,
the fast path's frames, shutdown. And once over a real socket: SIGTERM closes an open
socket with 1012."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from types import SimpleNamespace

import pytest
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from server.edge.ws import protocol
from server.edge.ws.protocol import EXTENSION, ClientDisconnected, SocketProtocol
from tests.app_support import prepare_database
from tests.server_support import spawned_server
from tests.support import wait_for

URL = "ws://127.0.0.1:8000/ws/room?token=very-secret"


class Transport:
    """What an asyncio transport is to the protocol, recorded."""

    def __init__(self):
        self.sent = bytearray()
        self.closing = self.aborted = False
        self.reading = True
        self.protocol: SocketProtocol | None = None

    def get_extra_info(self, name, default=None):
        info = {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}
        return info.get(name, default)

    def write(self, data):
        assert not self.closing, "a write after close"
        self.sent += data

    def writelines(self, chunks):
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self):
        return self.closing

    def close(self):
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self):
        self.aborted = True
        self.close()

    def pause_reading(self):
        self.reading = False

    def resume_reading(self):
        self.reading = True


class Pair:
    """One server protocol and one websockets client, wired by hand."""

    def __init__(self, app, **config):
        settings = {
            "ws_max_size": 1024,
            "ws_ping_interval": None,
            "ws_ping_timeout": None,
            "root_path": "",
            "asgi_version": "3.0",
            "loaded_app": app,
        }
        self.config = SimpleNamespace(**{**settings, **config})
        self.state = SimpleNamespace(connections=set(), tasks=set())
        self.server = SocketProtocol(config=self.config, server_state=self.state, app_state={})
        self.transport = Transport()
        self.transport.protocol = self.server
        self.server.connection_made(self.transport)
        self.client = ClientProtocol(parse_uri(URL), subprotocols=["chat"])
        self.events: list = []  # what the client received

    def handshake(self) -> None:
        self.client.send_request(self.client.connect())
        self.to_server()

    def to_server(self) -> None:
        assert self.transport.reading, "the server is not reading"
        data = b"".join(self.client.data_to_send())
        if data:
            self.server.data_received(data)

    def to_client(self) -> list:
        if self.transport.sent:
            self.client.receive_data(bytes(self.transport.sent))
            self.transport.sent.clear()
        if self.transport.closing:
            self.client.receive_eof()
        events = self.client.events_received()
        self.events += events
        return events

    def frames(self, opcode: Opcode | None = None) -> list[Frame]:
        self.to_client()
        return [e for e in self.events if isinstance(e, Frame) and opcode in (None, e.opcode)]

    def close_code(self) -> int | None:
        self.to_client()
        return self.client.close_rcvd.code if self.client.close_rcvd else None


def echo(log: list, accept: dict | None = None):
    """An app that accepts and sends every message back."""

    async def app(scope, receive, send):
        log.append(scope)
        assert await receive() == {"type": "websocket.connect"}
        await send({"type": "websocket.accept", **(accept or {})})
        while True:
            message = await receive()
            log.append(message)
            if message["type"] == "websocket.disconnect":
                return
            await send({**message, "type": "websocket.send"})

    return app


async def settle() -> None:
    """Let every ready callback and task run (no time passes): what did not happen
    now is waiting on something."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_the_asgi_interface_and_the_closing_handshake(caplog):
    caplog.set_level(logging.INFO, logger="switchboard.ws")
    log: list = []
    pair = Pair(echo(log, {"subprotocol": "chat", "headers": [(b"x-served-by", b"us")]}))
    pair.handshake()
    await wait_for(lambda: pair.to_client(), 5)
    response = pair.events[0]
    assert isinstance(response, Response) and response.status_code == 101
    assert response.headers["Sec-WebSocket-Protocol"] == "chat"
    assert response.headers["X-Served-By"] == "us"
    assert "Sec-WebSocket-Extensions" not in response.headers  # no compression, ever
    scope = log[0]
    assert (scope["type"], scope["path"], scope["query_string"]) == (
        "websocket",
        "/ws/room",
        b"token=very-secret",
    )
    assert scope["subprotocols"] == ["chat"] and scope["client"] == ("127.0.0.1", 50000)
    assert all(name == name.lower() for name, _ in scope["headers"])
    assert scope["extensions"][EXTENSION] is pair.server
    assert "websocket.http.response" in scope["extensions"]
    assert pair.server in pair.state.connections and len(pair.state.tasks) == 1

    # Text, binary and a fragmented message come back whole.
    pair.client.send_text(b"hello")
    pair.client.send_binary(b"\x00\x01")
    pair.client.send_text(b"frag", fin=False)
    pair.client.send_continuation(b"mented", fin=True)
    pair.to_server()
    await wait_for(lambda: len(pair.frames(Opcode.TEXT) + pair.frames(Opcode.BINARY)) == 3, 5)
    assert [m.get("text", m.get("bytes")) for m in log[1:]] == ["hello", b"\x00\x01", "fragmented"]
    assert [f.data for f in pair.frames() if f.opcode in (Opcode.TEXT, Opcode.BINARY)] == [
        b"hello",
        b"\x00\x01",
        b"fragmented",
    ]

    # The client closes: the server answers, ends the TCP connection, tells the app.
    pair.client.send_close(1000, "bye")
    pair.to_server()
    assert pair.close_code() == 1000 and pair.transport.closing
    await wait_for(lambda: log[-1]["type"] == "websocket.disconnect", 5)
    assert (log[-1]["code"], log[-1]["reason"]) == (1000, "bye")
    await wait_for(lambda: not pair.state.connections and not pair.state.tasks, 5)
    # The handshake is logged by its path, never with its query string.
    lines = [r for r in caplog.records if r.name == "switchboard.ws"]
    assert [(r.path, r.status) for r in lines] == [("/ws/room", 101)]
    assert not any("very-secret" in str(r.__dict__) for r in caplog.records)


async def test_no_more_is_read_while_the_app_has_not_taken_a_message():
    taken: list = []
    go = asyncio.Event()

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await go.wait()
        while True:
            taken.append(await receive())

    pair = Pair(app)
    pair.handshake()
    assert not pair.transport.reading  # while the app judges the handshake
    await wait_for(lambda: pair.to_client(), 5)
    assert pair.transport.reading
    pair.client.send_text(b"one")
    pair.client.send_text(b"two")
    pair.to_server()
    assert not pair.transport.reading
    go.set()
    await wait_for(lambda: len(taken) == 2, 5)
    assert [m["text"] for m in taken] == ["one", "two"] and pair.transport.reading


async def test_flow_control_holds_asgi_send_and_the_fast_path():
    sent = asyncio.Event()

    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "held"})
        sent.set()
        await receive()

    pair = Pair(app)
    pair.server.pause_writing()  # the transport's buffer is over its high-water mark
    pair.handshake()
    await wait_for(lambda: pair.to_client(), 5)
    socket = pair.server
    assert not socket.ready()
    waiting = asyncio.ensure_future(socket.writable())
    await settle()
    assert not sent.is_set() and not waiting.done() and pair.frames(Opcode.TEXT) == []
    socket.resume_writing()
    await wait_for(sent.is_set, 5)
    assert await waiting is True and socket.ready()
    assert [f.data for f in pair.frames(Opcode.TEXT)] == [b"held"]


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
async def test_the_fast_path_writes_whole_frames(size):
    pair = Pair(echo([]), ws_max_size=None)
    pair.handshake()
    await wait_for(lambda: pair.to_client(), 5)
    socket = pair.server
    body = bytes(range(256)) * (size // 256 + 1)
    parts = (b"{", body[: max(0, size - 1)])
    socket.write(parts, text=False)
    socket.write((b"x",), text=True)
    frames = pair.frames()
    assert [(f.opcode, f.data) for f in frames] == [
        (Opcode.BINARY, b"".join(parts)),
        (Opcode.TEXT, b"x"),
    ]
    socket.close(4401, "token expired")
    assert not socket.ready() and await socket.writable() is False
    with pytest.raises(RuntimeError):
        socket.write((b"late",), text=True)
    assert pair.close_code() == 4401


async def test_limits_and_bad_text_close_the_socket():
    for send_bad, code in (
        (lambda c: c.send_text(b"x" * 1025), 1009),  # over ws_max_size
        (lambda c: c.send_text(b"\xff\xfe"), 1007),  # not UTF-8
    ):
        log: list = []
        pair = Pair(echo(log))
        pair.handshake()
        await wait_for(lambda pair=pair: pair.to_client(), 5)
        send_bad(pair.client)
        pair.to_server()
        assert pair.close_code() == code and pair.transport.closing
        await wait_for(lambda log=log: log[-1]["type"] == "websocket.disconnect", 5)
        assert log[-1]["code"] == code


async def test_keepalive_pings_and_a_missing_pong_closes_1011():
    log: list = []
    pair = Pair(echo(log), ws_ping_interval=0.05, ws_ping_timeout=0.2)
    pair.handshake()
    await wait_for(lambda: pair.to_client(), 5)
    # Answered pings keep the socket open.
    for count in (1, 2):
        await wait_for(lambda count=count: len(pair.frames(Opcode.PING)) == count, 5)
        pair.to_server()  # the client's pong
    # A ping left unanswered: closed with 1011.
    await wait_for(lambda: len(pair.frames(Opcode.PING)) == 3, 5)
    await wait_for(lambda: pair.close_code() == 1011, 5)
    await wait_for(lambda: log[-1]["type"] == "websocket.disconnect", 5)
    assert log[-1]["code"] == 1011


async def test_a_peer_that_does_not_read_is_not_cut_by_the_keepalive(monkeypatch):
    """While our writing is paused the peer has not read what came before the ping,
    so its pong cannot come: the keepalive waits, and so does the cut after a close
    frame. Once the peer reads again, both apply."""
    deadlines = {"ping": 0, "cut": 0}
    ping_timed_out, cut = SocketProtocol._ping_timed_out, SocketProtocol._cut

    def counting_ping(self):
        deadlines["ping"] += 1
        ping_timed_out(self)

    def counting_cut(self):
        deadlines["cut"] += 1
        cut(self)

    monkeypatch.setattr(SocketProtocol, "_ping_timed_out", counting_ping)
    monkeypatch.setattr(SocketProtocol, "_cut", counting_cut)
    monkeypatch.setattr(protocol, "CLOSE_TIMEOUT_S", 0.05)
    log: list = []
    pair = Pair(echo(log), ws_ping_interval=0.02, ws_ping_timeout=0.05)
    pair.handshake()
    await wait_for(lambda: pair.to_client(), 5)
    pair.server.pause_writing()
    await wait_for(lambda: deadlines["ping"] >= 3, 5)  # three pong deadlines passed
    assert pair.close_code() is None and not pair.transport.closing
    pair.server.resume_writing()
    await wait_for(lambda: pair.close_code() == 1011, 5)  # no pong, and nothing in its way
    assert log[-1] == {"type": "websocket.disconnect", "code": 1011, "reason": ""}

    pair = Pair(echo([]))
    pair.handshake()
    await wait_for(lambda: pair.to_client(), 5)
    pair.server.pause_writing()
    pair.server.close(4401, "token expired")
    await wait_for(lambda: deadlines["cut"] >= 3, 5)
    assert not pair.transport.aborted
    pair.server.resume_writing()  # it reads, and never answers the close frame
    await wait_for(lambda: pair.transport.aborted, 5)
    assert pair.close_code() == 4401


async def test_handshake_refusals():
    async def close_first(scope, receive, send):
        await receive()
        await send({"type": "websocket.close"})

    async def deny(scope, receive, send):
        await receive()
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"{", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"}"})

    async def fail(scope, receive, send):
        await receive()
        raise RuntimeError("judgement failed")

    for app, status, body in ((close_first, 403, b""), (deny, 401, b"{}"), (fail, 500, b"")):
        pair = Pair(app)
        pair.handshake()
        await wait_for(lambda pair=pair: pair.to_client(), 5)
        response = pair.events[0]
        assert (response.status_code, response.body) == (status, body)
        assert pair.transport.closing


async def test_shutdown_closes_open_sockets_1012_and_answers_handshakes_503():
    log: list = []
    pair = Pair(echo(log))
    pair.handshake()
    await wait_for(lambda: pair.to_client(), 5)
    pair.server.shutdown()
    assert pair.close_code() == 1012 and pair.transport.closing
    await wait_for(lambda: log[-1]["type"] == "websocket.disconnect", 5)
    assert log[-1]["code"] == 1012

    judged = asyncio.Event()
    outcome: list = []

    async def slow(scope, receive, send):
        await receive()
        await judged.wait()
        try:
            await send({"type": "websocket.accept"})
        except OSError as error:
            outcome.append(error)

    pair = Pair(slow)
    pair.handshake()
    pair.server.shutdown()
    pair.to_client()
    assert pair.events[0].status_code == 503
    judged.set()
    await wait_for(lambda: outcome, 5)
    assert isinstance(outcome[0], ClientDisconnected)


async def test_an_app_failing_after_the_accept_closes_1011():
    async def app(scope, receive, send):
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        raise RuntimeError("broken")

    pair = Pair(app)
    pair.handshake()
    await wait_for(lambda: pair.to_client(), 5)
    pair.client.send_text(b"boom")
    pair.to_server()
    await wait_for(lambda: pair.close_code() == 1011, 5)


async def test_sigterm_closes_open_sockets_with_1012(backend, tmp_path):
    await prepare_database(backend.database_url)
    async with spawned_server(backend, tmp_path) as server, server.ws() as client:
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        os.kill(server.pid, signal.SIGTERM)
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(client.socket.wait_closed(), 10)
        assert client.socket.close_code == 1012
