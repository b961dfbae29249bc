"""Our websocket server protocol for uvicorn: RFC 6455 spoken through websockets'
sans-I/O `ServerProtocol`, the ASGI websocket interface for the app, and a fast path
for frames encoded once and pushed to many sockets.

uvicorn runs it through its `ws` setting (`uvicorn.Config(ws=SocketProtocol)`,
server/serve.py): on an upgrade request, uvicorn's HTTP protocol constructs it with the
keyword arguments `config`, `server_state` and `app_state`, calls
`connection_made(transport)` and `data_received(<the request>)`, then hands it the
transport. From there on the transport is this object's alone. Like uvicorn's own
protocols it joins `server_state.connections` (at SIGTERM uvicorn calls `shutdown()` on
each: an open socket is closed with 1012, a handshake still being judged gets 503) and
its ASGI task joins `server_state.tasks` (uvicorn waits for them, up to its graceful
shutdown timeout), so what is in flight finishes.

To the app it is an ASGI websocket server (ASGI spec 2.4): `websocket.connect`, then a
`websocket.receive` per message and one `websocket.disconnect`; the app answers
`websocket.accept` (subprotocol, headers), `websocket.close` (before the accept: HTTP
403), or a denial response through the `websocket.http.response` extension, then
`websocket.send` and `websocket.close`. `send` waits while the transport's buffer is
over its high-water mark (`pause_writing`), and no more is read from the socket while
the app has not taken the last message. Keepalive pings follow
`config.ws_ping_interval` and `config.ws_ping_timeout` (no pong is expected while the
peer has not read what came before its ping, which is when our writing is paused);
a message over `config.ws_max_size` closes the socket with 1009; no extension
(per-message compression) is ever negotiated. After our close frame the peer has 10
s to end the connection (again not counting while it has not read up to it), then it
is cut. Log lines name the handshake's path, never its query
string (tokens travel in `?token=`).

The fast path: `scope["extensions"]["switchboard.socket"]`, this object, offers

    ready() -> bool
        The socket is open (accepted; no close frame sent or received) and its
        transport takes data now (flow control has not paused it).
    write(parts, text) -> None
        One whole data frame, unfragmented and unmasked (text when `text`, else
        binary), whose payload is the parts joined; the parts go to the transport in
        one `writelines` (one writev), so a body shared by many sockets is never
        copied per socket. Only while open, else RuntimeError; between `ready()` and
        `write` nothing can intervene (no await), and a frame this object writes
        itself (pong, ping, close) is always written whole, so frames never
        interleave.
    await writable() -> bool
        Returns True once the socket takes data again, False once it never will
        (closing or closed).
    close(code, reason) -> None
        Sends the close frame now, as ASGI `websocket.close` would, without an await.

Under any other ASGI server the extension is absent and the app uses plain ASGI.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import logging
import random
import struct
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from server.wire.protocol import CLOSE_INTERNAL_ERROR, CLOSE_INVALID_TEXT, CLOSE_RESTARTING

log = logging.getLogger("switchboard.ws")
# websockets' own lines per connection (open, rejected, closed) repeat our handshake
# line: kept from the log unless someone lowers this logger's level to look at the wire.
wire_log = logging.getLogger("switchboard.ws.wire")
wire_log.setLevel(logging.WARNING)

EXTENSION = "switchboard.socket"
CLOSE_TIMEOUT_S = 10.0  # after our close frame: the peer's answer, or the socket is cut
# Once closing, what the peer may still send before it is cut unread: its close frame
# and what it had in flight, not a flood that goes on (the soak's ping flooder kept a
# core busy parsing frames for CLOSE_TIMEOUT_S after each 1008)
CLOSING_READ_BYTES = 64 * 1024


class _Phase(enum.Enum):
    HANDSHAKE = "the app judges the upgrade request"
    OPEN = "accepted, no close frame sent or received"
    CLOSING = "a close frame went out or came in, or the handshake was refused"
    CLOSED = "the transport is gone"


_HANDSHAKE, _OPEN, _CLOSING, _CLOSED = _Phase
_HEADER_16 = struct.Struct("!BBH").pack
_HEADER_64 = struct.Struct("!BBQ").pack


class ClientDisconnected(OSError):
    """ASGI `send` on a socket that is gone (the ASGI spec asks for an OSError)."""


class _Handshake:
    """What only the opening handshake needs; dropped once it is answered."""

    __slots__ = ("client", "denial", "path", "response")

    def __init__(self, path: str, client: str, response: Response):
        self.path = path
        self.client = client
        self.response = response  # the 101, sent if the app accepts
        self.denial: tuple[int, list, list[bytes]] | None = None  # a denial under way


class SocketProtocol(asyncio.Protocol):
    """One websocket connection, from the upgrade request to the transport's end."""

    __slots__ = (
        "_app_state",
        "_close_timer",
        "_closing_read",
        "_config",
        "_connections",
        "_disconnect",
        "_fragments",
        "_handshake",
        "_inbox",
        "_loop",
        "_phase",
        "_ping",
        "_ping_timer",
        "_read_paused",
        "_receiver",
        "_tasks",
        "_text",
        "_transport",
        "_write_paused",
        "_writers",
        "_ws",
    )

    def __init__(self, config, server_state, app_state: dict[str, Any], **_: Any) -> None:
        self._config = config
        self._connections = server_state.connections
        self._tasks = server_state.tasks
        self._app_state = app_state
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._ws = ServerProtocol(max_size=config.ws_max_size, logger=wire_log)
        self._phase = _HANDSHAKE
        self._handshake: _Handshake | None = None
        self._inbox: list[dict] | None = None  # messages the app has not taken
        self._receiver: asyncio.Future | None = None  # the app waiting in receive()
        self._disconnect: dict | None = None
        self._read_paused = False
        self._write_paused = False
        self._writers: list[asyncio.Future] | None = None  # waiting for resume_writing
        self._fragments: list[bytes] | None = None  # a fragmented message so far
        self._text = False
        self._ping: bytes | None = None  # the payload of the ping awaiting its pong
        self._ping_timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._closing_read = 0  # bytes received since the closing handshake began

    # --- asyncio.Protocol

    def connection_made(self, transport) -> None:
        self._transport = transport
        self._connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self._phase is _CLOSING:
            self._closing_read += len(data)
            if self._closing_read > CLOSING_READ_BYTES:
                self._transport.abort()
                return
        ws = self._ws
        ws.receive_data(data)
        for event in ws.events_received():
            if isinstance(event, Frame):
                self._frame(event)
            elif isinstance(event, Request):
                self._request(event)
        self._flush(ws)
        if ws.parser_exc is not None and self._phase is _OPEN:
            self._failed(ws)
        if self._inbox and not self._read_paused and self._phase is _OPEN:
            self._read_paused = True  # until the app takes what it was given
            self._transport.pause_reading()

    def eof_received(self) -> bool | None:
        ws = self._ws
        ws.receive_eof()
        self._flush(ws)
        if ws.parser_exc is not None and self._phase is _OPEN:
            self._failed(ws)
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.discard(self)
        self._stop_keepalive()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._phase = _CLOSED
        self._handshake = None
        self._disconnected(1006, "")  # unless the closing handshake told the app already

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_writers()

    def shutdown(self) -> None:
        """uvicorn's graceful shutdown: 1012 to an open socket, 503 to a handshake."""
        if self._phase is _HANDSHAKE and self._handshake is not None:
            self._deny(503, [], b"the server is shutting down; retry\n")
        elif self._phase is _OPEN:
            self.close(CLOSE_RESTARTING, "")
        self._end()

    # --- the fast path (scope["extensions"]["switchboard.socket"])

    def ready(self) -> bool:
        return (
            self._phase is _OPEN
            and not self._write_paused
            and not self._transport.is_closing()  # a write error, before connection_lost
        )

    def write(self, parts: Sequence[bytes], text: bool) -> None:
        if self._phase is not _OPEN:
            raise RuntimeError("the websocket is not open")
        size = 0
        for part in parts:
            size += len(part)
        first = 0x81 if text else 0x82  # FIN and the opcode; RSV bits 0: no extension
        if size < 126:
            header = bytes((first, size))
        elif size < 65536:
            header = _HEADER_16(first, 126, size)
        else:
            header = _HEADER_64(first, 127, size)
        if len(parts) == 1:
            self._transport.write(header + parts[0])
        else:
            self._transport.writelines((header + parts[0], *parts[1:]))

    async def writable(self) -> bool:
        while self._phase is _OPEN and self._write_paused:
            waiter = self._loop.create_future()
            if self._writers is None:
                self._writers = []
            self._writers.append(waiter)
            await waiter
        return self._phase is _OPEN

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self._phase is not _OPEN:
            return
        self._ws.send_close(code, reason)
        self._phase = _CLOSING
        self._flush()
        self._disconnected(code, reason)
        if self._read_paused:  # read on, for the peer's close frame
            self._read_paused = False
            self._transport.resume_reading()
        self._close_timer = self._loop.call_later(CLOSE_TIMEOUT_S, self._cut)

    # --- ASGI

    async def receive(self) -> dict:
        inbox = self._inbox
        if inbox:
            message = inbox.pop(0)
        elif self._disconnect is not None:
            return self._disconnect
        else:
            self._receiver = waiter = self._loop.create_future()
            try:
                message = await waiter
            finally:
                self._receiver = None
        if self._read_paused and not self._inbox and self._phase is _OPEN:
            self._read_paused = False
            self._transport.resume_reading()
        return message

    async def send(self, message: dict) -> None:
        kind = message["type"]
        if self._phase is _HANDSHAKE:
            self._answer_handshake(message)
        elif kind == "websocket.send":
            while self._phase is _OPEN and self._write_paused:
                await self.writable()
            if self._phase is not _OPEN:
                raise ClientDisconnected("the websocket is closed")
            text = message.get("text")
            if text is not None:
                self._ws.send_text(text.encode())
            else:
                self._ws.send_binary(message["bytes"])
            self._flush()
        elif kind == "websocket.close":
            self.close(message.get("code") or 1000, message.get("reason") or "")
        elif self._phase is _CLOSED or self._transport.is_closing():
            raise ClientDisconnected(f"{kind}: the websocket is closed")
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on an accepted websocket")

    def _answer_handshake(self, message: dict) -> None:
        kind = message["type"]
        handshake = self._handshake
        if handshake.denial is not None:
            if kind != "websocket.http.response.body":
                raise RuntimeError(f"expected websocket.http.response.body, not {kind!r}")
            status, headers, body = handshake.denial
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                self._deny(status, headers, b"".join(body))
        elif kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":  # before the accept: HTTP 403 (ASGI spec)
            self._deny(403, [], b"")
        elif kind == "websocket.http.response.start":
            status = message["status"]
            if not 100 <= status < 600:
                raise RuntimeError(f"invalid HTTP status {status}")
            handshake.denial = (status, list(message.get("headers", ())), [])
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} before the handshake is answered")

    async def _run_asgi(self, scope: dict) -> None:
        try:
            await self._config.loaded_app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception:
            log.exception("websocket application failed", extra={"path": scope["path"]})
            self._finished(CLOSE_INTERNAL_ERROR, "internal error")
        else:
            if self._phase is _HANDSHAKE and self._handshake is not None:
                # Not a refusal (those are answered, and logged at INFO by
                # _log_handshake) nor a client gone (connection_lost forgets the
                # handshake): the app's own bug, so an alarm.
                log.error("websocket application returned without answering the handshake")
            self._finished(1000, "")

    def _finished(self, code: int, reason: str) -> None:
        """The app is done: a handshake it left unanswered gets 500, a socket it left
        open is closed."""
        if self._phase is _HANDSHAKE and self._handshake is not None:
            self._deny(500, [], b"")
        elif self._phase is _OPEN:
            self.close(code, reason)
            self._end()

    # --- the opening handshake

    def _request(self, request: Request) -> None:
        ws = self._ws
        response = ws.accept(request)  # checks the upgrade request; negotiates nothing
        transport = self._transport
        client = _address(transport.get_extra_info("peername"))
        raw_path, _, query = request.path.partition("?")
        root = self._config.root_path
        path = root + unquote(raw_path)
        peer = f"{client[0]}:{client[1]}" if client else ""
        if response.status_code != 101:
            ws.send_response(response)  # its flush ends the connection
            self._phase = _CLOSING
            _log_handshake(path, peer, response.status_code)
            return
        subprotocols = [
            token.strip()
            for header in request.headers.get_all("Sec-WebSocket-Protocol")
            for token in header.split(",")
            if token.strip()
        ]
        scope = {
            "type": "websocket",
            "asgi": {"version": self._config.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if transport.get_extra_info("sslcontext") else "ws",
            "server": _address(transport.get_extra_info("sockname")),
            "client": client,
            "root_path": root,
            "path": path,
            "raw_path": (root + raw_path).encode("ascii"),
            "query_string": query.encode("ascii"),
            "headers": [
                (name.lower().encode("ascii"), value.encode("latin-1"))
                for name, value in request.headers.raw_items()
            ],
            "subprotocols": subprotocols,
            "state": self._app_state.copy(),
            "extensions": {"websocket.http.response": {}, EXTENSION: self},
        }
        self._handshake = _Handshake(path, peer, response)
        self._inbox = [{"type": "websocket.connect"}]
        # Nothing more is read until the app has judged the handshake: a client may
        # not send frames before the 101 (RFC 6455 4.1), and the frames that follow
        # it are read by the protocol of the open connection.
        self._read_paused = True
        transport.pause_reading()
        task = self._loop.create_task(self._run_asgi(scope))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _accept(self, message: dict) -> None:
        handshake = self._handshake
        if self._transport.is_closing():
            raise ClientDisconnected("the client left during the handshake")
        response = handshake.response
        del response.headers["Date"]
        response.headers["Date"] = email.utils.formatdate(usegmt=True)
        for name, value in message.get("headers") or ():
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        subprotocol = message.get("subprotocol")
        if subprotocol:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
        handshake_ws = self._ws
        handshake_ws.send_response(response)
        self._flush(handshake_ws)
        # The open connection gets a protocol of its own, created open: the one that
        # parsed the request would keep it (and its headers) for the socket's life.
        self._ws = ServerProtocol(
            state=State.OPEN, max_size=self._config.ws_max_size, logger=wire_log
        )
        self._phase = _OPEN
        self._handshake = None
        _log_handshake(handshake.path, handshake.client, 101)
        self._start_keepalive()
        if not self._inbox:
            self._read_paused = False
            self._transport.resume_reading()

    def _deny(self, status: int, headers: list, body: bytes) -> None:
        handshake = self._handshake
        response_headers = Headers(
            (name.decode("latin-1"), value.decode("latin-1")) for name, value in headers
        )
        response_headers.setdefault("Date", email.utils.formatdate(usegmt=True))
        response_headers.setdefault("Connection", "close")
        response_headers.setdefault("Content-Length", str(len(body)))
        response_headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        self._ws.send_response(Response(status, phrase, response_headers, body))
        self._phase = _CLOSING
        self._handshake = None
        self._flush()
        self._disconnected(1006, "")
        _log_handshake(handshake.path, handshake.client, status)

    # --- frames of the open connection

    def _frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if frame.fin:
                self._message(frame.data, opcode is Opcode.TEXT)
            else:
                self._fragments = [frame.data]
                self._text = opcode is Opcode.TEXT
        elif opcode is Opcode.CONT:
            self._fragments.append(frame.data)
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), None
                self._message(data, self._text)
        elif opcode is Opcode.PONG:
            if self._ping is not None and bytes(frame.data) == self._ping:
                self._ping = None
                self._stop_keepalive()
                self._start_keepalive()
        elif opcode is Opcode.CLOSE:
            if self._phase is _OPEN:  # the peer's: websockets queued the echo
                self._phase = _CLOSING
                close = self._ws.close_rcvd
                self._disconnected(close.code, close.reason)
        # Opcode.PING: websockets queued the pong.

    def _message(self, data, text: bool) -> None:
        if self._phase is not _OPEN:
            return  # after our close frame: discarded
        if text:
            try:
                message = {"type": "websocket.receive", "text": bytes(data).decode()}
            except UnicodeDecodeError:
                self._ws.fail(CLOSE_INVALID_TEXT, "invalid UTF-8 in a text message")
                self._flush()
                self._failed(self._ws)
                return
        else:
            message = {"type": "websocket.receive", "bytes": bytes(data)}
        self._deliver(message)

    def _failed(self, ws: ServerProtocol) -> None:
        """websockets failed the connection (a protocol error, a message over the
        limit: 1009, bad UTF-8: 1007, the peer gone: 1006); its close frame and the
        end of the stream went out with the last flush."""
        self._phase = _CLOSING
        close = ws.close_sent
        self._disconnected(close.code if close is not None else 1006, "")

    # --- keepalive

    def _start_keepalive(self) -> None:
        interval = self._config.ws_ping_interval
        if interval:
            self._ping_timer = self._loop.call_later(interval, self._send_ping)

    def _stop_keepalive(self) -> None:
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def _send_ping(self) -> None:
        self._ping_timer = None
        if self._phase is not _OPEN:
            return
        self._ping = random.randbytes(4)
        self._ws.send_ping(self._ping)
        self._flush()
        timeout = self._config.ws_ping_timeout
        if timeout:
            self._ping_timer = self._loop.call_later(timeout, self._ping_timed_out)
        else:
            self._start_keepalive()

    def _ping_timed_out(self) -> None:
        self._ping_timer = None
        if self._phase is not _OPEN:
            return
        if self._write_paused:
            # The peer has not read what we wrote before the ping (that is why our
            # writing is paused): its pong cannot have come yet. Not reading is the
            # outbox's business (server/edge/ws/session.py), not the keepalive's.
            self._ping_timer = self._loop.call_later(
                self._config.ws_ping_timeout, self._ping_timed_out
            )
            return
        self._ping = None
        self._ws.fail(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")
        self._flush()
        self._failed(self._ws)

    # --- plumbing

    def _flush(self, ws: ServerProtocol | None = None) -> None:
        """Write what websockets has to send, whole; its end of stream ends the
        connection."""
        writes = (ws or self._ws).data_to_send()
        if not writes:
            return
        transport = self._transport
        end = b"" in writes
        data = [chunk for chunk in writes if chunk]
        if data and not transport.is_closing():
            transport.write(data[0] if len(data) == 1 else b"".join(data))
        if end:
            self._end()

    def _end(self) -> None:
        """Close the transport once what is buffered went out; cut it if the peer
        has not ended it CLOSE_TIMEOUT_S later."""
        transport = self._transport
        if not transport.is_closing():
            transport.close()
        if self._close_timer is None and self._phase is not _CLOSED:
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT_S, self._cut)

    def _cut(self) -> None:
        """The peer did not answer our close frame in time: abort the connection,
        unless the peer has not read what came before the close frame (our writing is
        paused). A live peer that does not read is not cut: its outbox bounds what it
        costs, it learns why when it reads again, and TCP finds a dead one."""
        self._close_timer = None
        if self._phase is _CLOSED:
            return
        if self._write_paused:
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT_S, self._cut)
            return
        self._transport.abort()

    def _deliver(self, message: dict) -> None:
        waiter = self._receiver
        if waiter is not None and not waiter.done() and not self._inbox:
            waiter.set_result(message)
            return
        if self._inbox is None:
            self._inbox = []
        self._inbox.append(message)

    def _disconnected(self, code: int, reason: str) -> None:
        """Tell the app, once, that the socket is over."""
        self._stop_keepalive()
        self._wake_writers()
        if self._disconnect is None:
            self._disconnect = {"type": "websocket.disconnect", "code": code, "reason": reason}
            self._deliver(self._disconnect)

    def _wake_writers(self) -> None:
        writers, self._writers = self._writers, None
        for waiter in writers or ():
            if not waiter.done():
                waiter.set_result(None)


def _address(info) -> tuple[str, int] | None:
    if isinstance(info, list | tuple) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


def _log_handshake(path: str, client: str, status: int) -> None:
    """One line per handshake, with its path and never its query string."""
    log.info("websocket handshake", extra={"path": path, "status": status, "client": client})
