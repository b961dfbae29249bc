#!/usr/bin/env python3
"""Variant U: Starlette on uvicorn (ws="websockets-sansio"), pushes bypass the ASGI send.

Decision record: docs/websocket-server.md. Runs inside the fan-out harness in
/work/shared/peers (read-only; it provides fanout_common.py, run_fanout.sh, client.js):

    d=$(mktemp -d) && cp -r /work/shared/peers "$d" && chmod -R u+w "$d" && cd "$d/peers"
    python3 -m venv .venv && .venv/bin/pip install -r requirements.txt && npm ci
    cp /work/main/bench/peers_variants/srv_uvicorn_fastpath.py .

then add these two lines to VARIANTS in run_fanout.sh (e.g. after the B4 line):

  U|Starlette/uvicorn ws=websockets-sansio, accept via ASGI, frame built once, transport.write() per conn|raw|18161|$PY srv_uvicorn_fastpath.py --port 18161|ws://127.0.0.1:18161/ws|
  U10|U + 10 consecutive messages coalesced into one write per conn|raw|18162|$PY srv_uvicorn_fastpath.py --port 18162 --coalesce 10|ws://127.0.0.1:18162/ws|

and run, next to the floor (A2), its pre-framed twin (A3/A4) and plain Starlette (B3):

    CONNS=1000 MSGS=200 REPS=3 ./run_fanout.sh 'A2|A3|A4|B3|U|U10'

(run_fanout.sh anchors the filter, `^(FILTER)$`: 'B' alone matches no variant.)
Standalone: .venv/bin/python srv_uvicorn_fastpath.py --port 18161 [--coalesce 10]
[--max-buffer BYTES]; it serves ws://127.0.0.1:PORT/ws on loopback only.

The handshake, the inbound side (text "go", pings, close) and shutdown stay uvicorn's and
Starlette's. Only the push path is different: the binary frame (unmasked, FIN + opcode 2,
length, payload) is built ONCE per message and the same bytes object is written with
transport.write(frame) to every connection - no per-connection websockets.ServerProtocol
call, no await, no ASGI message dict.

Where the transport comes from: uvicorn calls app(scope, receive, send) with
send = WebSocketsSansIOProtocol.send, a bound method, so send.__self__ is the protocol and
send.__self__.transport its asyncio transport. Starlette wraps `send` in a closure further in
(starlette._exception_handler.wrap_app_handling_exceptions), so the endpoint's
websocket._send has no __self__. The outermost ASGI middleware below (CaptureProtocol) takes
the protocol from the raw `send` and puts it in the scope for the endpoint.

Rules the push path keeps (see push()):
  * never write after a close frame: skip a connection once proto.close_sent (the app or a
    keepalive timeout sent close) or transport.is_closing() (peer closed, lost, shutdown).
    uvloop raises RuntimeError on write() to a closed transport, so the check is needed.
  * backpressure: transport.get_write_buffer_size() is checked before each write; above
    --max-buffer bytes the client is too slow and its connection is aborted (it would then
    reconnect and resync). The transport still calls proto.pause_writing()/resume_writing()
    on these writes, so uvicorn's own send() (pongs are written directly, but close frames
    and ASGI sends await proto.writable) keeps seeing the right state.
  * frames are written whole, synchronously, on the loop thread, so they never interleave
    with the pong/close frames uvicorn writes from data_received().
  * permessage-deflate is off (ws_per_message_deflate=False); with it on, an uncompressed
    frame (RSV1=0) would still be valid (RFC 7692), but compression is not what is measured.

Payload: fanout_common.make_payload (uint32 LE seq + uint64 LE time_ns stamped right before
the writes + padding, 120 bytes).
"""
import argparse
import asyncio

import starlette
import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from fanout_common import make_payload, ws_binary_frame

SCOPE_KEY = "switchboard.ws_protocol"
CONNS: set = set()  # WebSocketsSansIOProtocol objects of accepted connections
ARGS = None
STATS = {"aborted_slow": 0, "skipped_closing": 0}


class CaptureProtocol:
    """Outermost ASGI middleware: expose uvicorn's sans-io protocol object to the endpoint."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket":
            proto = getattr(send, "__self__", None)
            if isinstance(proto, WebSocketsSansIOProtocol):
                scope[SCOPE_KEY] = proto
        await self.app(scope, receive, send)


def push(data: bytes, max_buffer: int) -> None:
    """Write the same pre-built frame bytes to every open connection."""
    slow = None
    for proto in CONNS:
        t = proto.transport
        if proto.close_sent or t.is_closing():
            STATS["skipped_closing"] += 1
            continue
        if max_buffer and t.get_write_buffer_size() > max_buffer:
            slow = slow or []
            slow.append(proto)
            continue
        t.write(data)
    if slow:
        for proto in slow:
            STATS["aborted_slow"] += 1
            CONNS.discard(proto)
            proto.transport.abort()  # connection_lost -> websocket.disconnect to the endpoint
        print(f"slow consumers aborted: {len(slow)} (total {STATS['aborted_slow']})", flush=True)


async def burst(n: int, coalesce: int, max_buffer: int) -> None:
    pending = []
    for seq in range(n):
        frame = ws_binary_frame(make_payload(seq))  # built once per message
        if coalesce > 1:
            pending.append(frame)
            if len(pending) == coalesce or seq == n - 1:
                data = b"".join(pending)
                pending.clear()
                push(data, max_buffer)
        else:
            push(frame, max_buffer)
        await asyncio.sleep(0)  # yield once between messages, like the other variants


async def ws_endpoint(websocket: WebSocket) -> None:
    proto = websocket.scope.get(SCOPE_KEY)
    if proto is None:  # not uvicorn's websockets-sansio: refuse rather than misbehave
        await websocket.close(code=1011)
        return
    await websocket.accept()  # 101 is written synchronously inside this send()
    CONNS.add(proto)
    try:
        while True:
            if await websocket.receive_text() == "go":
                asyncio.get_running_loop().create_task(
                    burst(ARGS.msgs, ARGS.coalesce, ARGS.max_buffer))
    except WebSocketDisconnect:
        pass
    finally:
        CONNS.discard(proto)


app = CaptureProtocol(Starlette(routes=[WebSocketRoute("/ws", ws_endpoint)]))

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--msgs", type=int, default=200)
    ap.add_argument("--coalesce", type=int, default=1,
                    help="join the frames of this many consecutive messages and write them "
                         "with one transport.write() per connection")
    ap.add_argument("--max-buffer", type=int, default=1 << 20,
                    help="abort a connection whose transport write buffer exceeds this many "
                         "bytes (0: no check)")
    ARGS = ap.parse_args()
    print(f"starlette {starlette.__version__} uvicorn {uvicorn.__version__} ws=websockets-sansio "
          f"send=transport.write coalesce={ARGS.coalesce} max_buffer={ARGS.max_buffer}", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=ARGS.port, loop="uvloop", http="httptools",
                ws="websockets-sansio", ws_ping_interval=None, ws_per_message_deflate=False,
                ws_max_size=64 * 1024, lifespan="off", log_level="warning",
                access_log=False, backlog=2048)
