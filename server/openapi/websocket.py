"""The websocket `/ws` in the OpenAPI document: its frames as component schemas
(`ClientFrame.<type>`, `ServerFrame.<type>`, and `ClientFrame`/`ServerFrame`, any one
of them), and `x-websocket` at the document's root for its path, subprotocols and
close codes. All of it from server/wire/protocol.py; a frame that carries an HTTP
body takes that body's schema from the document's own components."""

from __future__ import annotations

from server.core.fields import ref
from server.wire.protocol import (
    CLIENT_FRAMES,
    CLOSE_CODES,
    MAX_FRAME_BYTES,
    PATH,
    SERVER_FRAMES,
    SUBPROTOCOL_FRAMES,
    Frame,
)


def client_frame(type_: str) -> str:
    return f"ClientFrame.{type_}"


def server_frame(type_: str) -> str:
    return f"ServerFrame.{type_}"


def _any_of(frames: dict[str, Frame], name) -> dict:
    return {
        "oneOf": [ref(name(type_)) for type_ in frames],
        "discriminator": {
            "propertyName": "type",
            "mapping": {type_: ref(name(type_))["$ref"] for type_ in frames},
        },
    }


def frame_schemas(components: dict[str, dict]) -> dict[str, dict]:
    """Every frame's schema; `components`: the document's other schemas (the bodies
    some client frames carry)."""
    schemas: dict[str, dict] = {}
    for type_, frame in CLIENT_FRAMES.items():
        body = components[frame.body] if frame.body else None
        schemas[client_frame(type_)] = frame.schema(body)
    for type_, frame in SERVER_FRAMES.items():
        schemas[server_frame(type_)] = frame.schema()
    schemas["ClientFrame"] = {
        **_any_of(CLIENT_FRAMES, client_frame),
        "description": "A frame a client sends on /ws.",
    }
    schemas["ServerFrame"] = {
        **_any_of(SERVER_FRAMES, server_frame),
        "description": "A frame the server sends on /ws. A client ignores keys it does not know.",
    }
    return schemas


def websocket() -> dict:
    """The document's `x-websocket`: what OpenAPI has no words for."""
    return {
        "path": PATH,
        "description": "The live views, popups, wallboards and a conversation's actions, "
        "over one websocket (docs/api.md). The token goes in Authorization: Bearer, or "
        "?token= for programs; pages use ?ticket= with a single-use ticket from "
        "POST /api/v1/ws-tickets (30 s). A missing, bad, used or expired one is refused "
        "with 401, a foreign Origin with 403.",
        "subprotocols": SUBPROTOCOL_FRAMES,
        "maxFrameBytes": MAX_FRAME_BYTES,
        "clientFrames": ref("ClientFrame"),
        "serverFrames": ref("ServerFrame"),
        "closeCodes": {str(code): meaning for code, meaning in CLOSE_CODES.items()},
    }
