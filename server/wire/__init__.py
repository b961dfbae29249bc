"""Conversation rows and websocket frames as clients see them: the one projection
from a stored row to its wire form, and frame encoding (JSON, msgpack) done once per
delta; the websocket frames declared (protocol.py). May import: `storage`, `core`."""
