"""/ws writes frames straight to uvicorn's transport (docs/websocket-server.md): the
server's protocol object must reach the endpoint, or every push takes the slow path."""

from websockets.protocol import Protocol

from server.edge.ws import connection as ws
from tests.server_support import live_server


async def test_pushes_take_the_raw_transport_path(backend, tmp_path, monkeypatch):
    sockets: list[ws.RawSocket | None] = []
    found = ws.RawSocket.of.__func__

    def recording(cls, send, text):
        sockets.append(found(cls, send, text))
        return sockets[-1]

    monkeypatch.setattr(ws.RawSocket, "of", classmethod(recording))
    async with live_server(backend, tmp_path) as server, server.ws() as client:
        pong = await client.request({"type": "ping"})
        assert pong["type"] == "pong"
        assert len(sockets) == 1 and sockets[0] is not None, "uvicorn's protocol did not reach /ws"
        # What only the handshake needed is not kept for the life of the socket:
        # uvicorn's request and response, websockets' handshake parser (it holds the
        # request), the asyncio.Queue (an Inbox instead). A uvicorn or websockets
        # upgrade that changes these internals shows here.
        protocol = sockets[0].protocol
        assert protocol.request is None and protocol.response is None
        assert protocol.conn.parser.gi_code is Protocol.parse.__code__
        assert isinstance(protocol.queue, ws.Inbox)
        # The socket still reads frames after the swap (test_ws_protocol covers the
        # 1009 close on an oversized frame, also after it).
        again = await client.request({"type": "ping"})
        assert again["type"] == "pong"
