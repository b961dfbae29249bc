"""The websocket endpoints, as routes of the app: `/ws` and `/webchat/{tenant}`."""

from __future__ import annotations

from starlette.routing import WebSocketRoute

from server.edge.ws import connection, webchat

ROUTES = [
    WebSocketRoute("/ws", connection.ENDPOINT, name="ws"),
    WebSocketRoute("/webchat/{tenant}", webchat.ENDPOINT, name="webchat"),
]
