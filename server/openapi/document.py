"""The OpenAPI document served at /openapi.json: the core API (core.py), the parts of
providers (channels.py), routing (routing.py) and the pages (pages.py), and the
websocket's frames (websocket.py)."""

from __future__ import annotations

from server.openapi import channels as openapi_channels
from server.openapi.core import (
    OPENAPI_VERSION,
    admin_schemas,
    conversation_schemas,
    error_responses,
    event_schemas,
    other_schemas,
    paths,
    view_schemas,
)
from server.openapi.pages import pages_paths, pages_schemas
from server.openapi.routing import routing_paths, routing_schemas
from server.openapi.websocket import frame_schemas, websocket


def openapi_document() -> dict:
    schemas = {
        **other_schemas(),
        **event_schemas(),
        **conversation_schemas(),
        **admin_schemas(),
        **view_schemas(),
        **openapi_channels.schemas(),
        **routing_schemas(),
        **pages_schemas(),
    }
    schemas.update(frame_schemas(schemas))
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Switchboard",
            "version": "1",
            "description": (
                "Real-time contact-center service. JSON by default; every body may also be sent "
                "and asked for as msgpack (Content-Type / Accept: application/msgpack). Errors "
                'are {"error": {"code", "message", ...}}. The live views, popups and '
                "wallboards are a websocket at GET /ws: `x-websocket` and the ClientFrame and "
                "ServerFrame schemas describe it."
            ),
        },
        "security": [{"bearer": []}],
        "x-websocket": websocket(),
        "paths": {**paths(), **openapi_channels.paths(), **routing_paths(), **pages_paths()},
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A token naming tenant, sub, role and expiry "
                    "(`switchboard token --tenant T --role R --user U`).",
                },
                "recordingLink": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "access",
                    "description": "A recording link's token (createRecordingLink): plays "
                    "that one recording, for a few minutes, and is accepted nowhere else.",
                },
            },
            "schemas": schemas,
            "responses": error_responses(),
        },
    }
