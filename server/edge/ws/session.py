"""The websocket connection core that `/ws` and `/webchat/{tenant}` share.

An endpoint is an `Endpoint` (an ASGI app in the app's route list) with a handshake
judgement, and a `Session` subclass with a handler table. Everything else is here, the
same for both:

* The handshake: the judgement accepts (a session and its subprotocol) or refuses
  (`HandshakeRefused`: an HTTP status and a JSON error body, through the ASGI denial
  response extension, or a plain 403 where the server has none). Origins compare with
  `origin_in`: scheme and host case-insensitive, a trailing slash ignored.
* Outbound: `send(*parts)` takes one frame as the parts of its payload. While the
  socket takes data it goes out at once, through the server's fast path
  (server/edge/ws/protocol.py) when there is one, in one write; once the client stops
  reading, frames wait in an outbox bounded in bytes (`outbox_bytes`), drained by a
  task that exists only while it holds something. When it would overflow, what waits is
  dropped and `overflow()` decides: close with 1013 unless the endpoint does better.
* Inbound: each message is decoded (`decode`; a malformed one gets an `error` frame
  `malformed`), passes `admit()` (where a per-connection token bucket sits, weighing
  the decoded frame), must be a
  map with a string `type`, and goes to the handler table (`unknown_type` otherwise).
  A handler's refusal (`refusals`) becomes an `error` frame with its `code`, `message`
  and extra keys; anything else is logged and answered `internal`. In every case the
  socket stays open. Between two messages the connection yields to the event loop,
  so one socket's pipelined frames never hold up another's or an HTTP request. A
  message over the server's limit closes it with 1009 (the
  server's doing: uvicorn's `ws_max_size`).
* Closing: `close(code, reason)` sends the close frame once what waits went out (at
  once, dropping it, for 1013: a client that cannot keep up would never read it).

Under an ASGI server without the fast path every frame goes through ASGI `send`; the
first connection to find so says it in the log, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

from starlette.requests import HTTPConnection

from server.edge.ws.protocol import EXTENSION
from server.wire.frames import JSON, decode_json, encode
from server.wire.protocol import CLOSE_INTERNAL_ERROR, CLOSE_TRY_AGAIN_LATER

log = logging.getLogger("switchboard.ws")

NO_REF = object()  # an endpoint whose frames carry no `ref`

Handler = Callable[[Any, dict, Any], Awaitable[None]]

_told_plain_asgi = False


class HandshakeRefused(Exception):
    """The handshake is answered with HTTP `status` and `{"error": {code, message}}`."""

    def __init__(self, status: int, code: str, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after_s = retry_after_s


class Malformed(Exception):
    """A message that does not decode; its text is the error frame's message."""


def origin_key(origin: str) -> str:
    """An origin as compared: scheme and host are case-insensitive (an origin has no
    path, and a port is digits, so the whole of it is), a trailing slash is not part
    of it."""
    return origin.strip().rstrip("/").lower()


def origin_in(origin: str, allowed: Iterable[str]) -> bool:
    key = origin_key(origin)
    return bool(key) and any(key == origin_key(entry) for entry in allowed)


class Session:
    """One accepted websocket: its outbox and its inbound dispatch."""

    __slots__ = (
        "_asgi_send",
        "_backlog",
        "_backlog_bytes",
        "_drain",
        "_overflowed",
        "_socket",
        "_text",
        "closing",
        "format",
    )

    handlers: ClassVar[Mapping[str, Handler]] = {}
    outbox_bytes: ClassVar[int] = 1 << 20
    refusals: ClassVar[tuple[type[Exception], ...]] = ()

    def __init__(self, format: str = JSON):
        self.format = format
        self._text = format == JSON
        self._socket = None  # the server's fast path, when it offers one
        self._asgi_send = None
        self._backlog: deque[bytes] | None = None  # None: nothing waits
        self._backlog_bytes = 0
        self._drain: asyncio.Task | None = None
        self._overflowed = False
        self.closing: tuple[int, str] | None = None

    def attach(self, socket, asgi_send) -> None:
        """The accepted socket: the fast path (None under another server) and ASGI
        `send`, for what goes without it."""
        self._socket = socket
        self._asgi_send = asgi_send

    # --- what an endpoint adds

    async def opened(self) -> None:
        """Accepted: before the first inbound message."""

    async def ended(self) -> None:
        """The socket is over (no more messages); outbound may still drain."""

    def admit(self, data: str | bytes, frame: Any) -> bool:
        """Whether to handle this message (`frame`: it decoded, or None); a refusal
        answers it itself. The place for a per-connection token bucket."""
        return True

    def decode(self, data: str | bytes) -> Any:
        """The message as a frame; raises Malformed."""
        if not isinstance(data, str):
            raise Malformed("frames are JSON text")
        try:
            return decode_json(data)
        except ValueError:
            raise Malformed("the frame is not valid JSON") from None

    def ref_of(self, frame: dict) -> Any:
        """What an answer to `frame` echoes, or NO_REF."""
        return NO_REF

    def overflow(self) -> None:
        """The outbox would pass its bound: what waited is dropped already."""
        self.close(CLOSE_TRY_AGAIN_LATER, "client cannot keep up")

    # --- outbound

    def send(self, *parts: bytes) -> None:
        """One frame, given as the parts of its payload."""
        if self.closing is not None:
            return
        socket = self._socket
        if self._backlog is None and socket is not None and socket.ready():
            socket.write(parts, self._text)
            return
        self.enqueue(parts[0] if len(parts) == 1 else b"".join(parts))

    def enqueue(self, frame: bytes) -> None:
        """A frame behind those waiting; past the bound, `overflow()`."""
        if self._backlog_bytes + len(frame) > self.outbox_bytes:
            self._backlog = deque()
            self._backlog_bytes = 0
            self.overflow()
            return
        if self._backlog is None:
            self._backlog = deque()
        self._backlog.append(frame)
        self._backlog_bytes += len(frame)
        self._start_drain()

    def reply(self, frame: dict[str, Any]) -> None:
        self.send(encode(self.format, frame))

    def error(self, code: str, message: str, ref: Any = NO_REF, **extra: Any) -> None:
        frame: dict[str, Any] = {"type": "error"}
        if ref is not NO_REF:
            frame["ref"] = ref
        frame["code"] = code
        frame["message"] = message
        frame.update(extra)
        self.reply(frame)

    def close(self, code: int, reason: str) -> None:
        """Close the socket once what waits went out (at once for 1013)."""
        if self.closing is not None:
            return
        self.closing = (code, reason)
        if code == CLOSE_TRY_AGAIN_LATER and self._backlog is not None:
            self._backlog.clear()
            self._backlog_bytes = 0
        if not self._backlog and self._drain is None and self._socket is not None:
            self._socket.close(code, reason)
            return
        self._start_drain()

    def _start_drain(self) -> None:
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(self._drain_outbox())

    async def _drain_outbox(self) -> None:
        socket = self._socket
        try:
            while self._backlog:
                if socket is not None:
                    if not socket.ready():
                        if not await socket.writable():
                            break  # closed meanwhile: nobody will read the rest
                        continue
                    frame = self._backlog.popleft()
                    self._backlog_bytes -= len(frame)
                    socket.write((frame,), self._text)
                else:
                    frame = self._backlog.popleft()
                    self._backlog_bytes -= len(frame)
                    if self._text:
                        await self._asgi_send({"type": "websocket.send", "text": frame.decode()})
                    else:
                        await self._asgi_send({"type": "websocket.send", "bytes": frame})
            self._backlog = None
            self._backlog_bytes = 0
            self._overflowed = False
            if self.closing is not None:
                code, reason = self.closing
                if socket is not None:
                    socket.close(code, reason)
                else:
                    message = {"type": "websocket.close", "code": code, "reason": reason}
                    await self._asgi_send(message)
        except Exception:  # the client went away meanwhile: nothing more to send
            log.debug("websocket write failed", exc_info=True)
        finally:
            self._drain = None

    async def finish(self) -> None:
        """The socket is ending: let a pending close go out (briefly), then stop."""
        drain = self._drain
        if drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(drain), 1)
            drain.cancel()

    # --- inbound

    async def handle(self, data: str | bytes) -> None:
        """One inbound message; every problem becomes an `error` frame."""
        try:
            frame = self.decode(data)
        except Malformed as malformed:
            if self.admit(data, None):
                self.error("malformed", str(malformed))
            return
        if not self.admit(data, frame):
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            self.error("malformed", 'a frame must be an object with a string "type"')
            return
        ref = self.ref_of(frame)
        handler = self.handlers.get(frame["type"])
        if handler is None:
            self.error("unknown_type", f"unknown frame type {frame['type'][:100]!r}", ref)
            return
        try:
            await handler(self, frame, ref)
        except self.refusals as refusal:
            extra = refusal.extra
            retry_after_s = getattr(refusal, "retry_after_s", None)
            if retry_after_s is not None:
                extra = {**extra, "retry_after_s": retry_after_s}
            self.error(refusal.code, refusal.message, ref, **extra)
        except Exception:  # ours, not the client's: say so and keep the socket
            log.exception("websocket frame failed", extra={"type": frame["type"][:100]})
            self.error("internal", "the server could not handle this frame; retry", ref)


class Endpoint:
    """An ASGI app for one websocket path: judge the handshake, then serve the session
    until the socket ends."""

    async def judge(self, connection: HTTPConnection) -> tuple[Session, str | None]:
        """The session and the subprotocol chosen; or raise HandshakeRefused."""
        raise NotImplementedError

    async def __call__(self, scope, receive, send) -> None:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        try:
            session, subprotocol = await self.judge(HTTPConnection(scope, receive))
        except HandshakeRefused as refused:
            await _deny(scope, send, refused)
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": subprotocol})
        except OSError:  # the client left while it was judged
            return
        socket = scope.get("extensions", {}).get(EXTENSION)
        if socket is None:
            _say_plain_asgi()
        scope["headers"] = []  # the handshake's: not kept for the life of the socket
        session.attach(socket, send)
        try:
            await session.opened()
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                if session.closing is None:
                    data = message.get("text")
                    await session.handle(data if data is not None else message.get("bytes"))
                    # Fair with everyone else: frames of one read would otherwise be
                    # handled back to back, /healthz and other sockets waiting.
                    await asyncio.sleep(0)
        except Exception:
            if session.closing is None:
                session.close(CLOSE_INTERNAL_ERROR, "internal error")
            raise
        finally:
            with contextlib.suppress(Exception):
                await session.ended()
            await session.finish()


async def _deny(scope, send, refused: HandshakeRefused) -> None:
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close"})  # the server answers 403
        return
    body = json.dumps({"error": {"code": refused.code, "message": refused.message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if refused.retry_after_s is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(refused.retry_after_s))).encode()))
    await send(
        {"type": "websocket.http.response.start", "status": refused.status, "headers": headers}
    )
    await send({"type": "websocket.http.response.body", "body": body})


def _say_plain_asgi() -> None:
    global _told_plain_asgi
    if not _told_plain_asgi:
        _told_plain_asgi = True
        log.info(
            "websockets run over plain ASGI send: the server offers no %r extension "
            "(server/edge/ws/protocol.py is uvicorn's `ws` protocol in `switchboard serve`)",
            EXTENSION,
        )
