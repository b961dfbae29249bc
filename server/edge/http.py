"""HTTP plumbing shared by the endpoints: bodies in JSON or msgpack (read with a size
cap), answers in the format asked for, and authentication."""

from __future__ import annotations

import json
import re
from typing import Any

import msgpack
from starlette.requests import Request
from starlette.responses import Response

from server.core.auth import InvalidToken, Principal, verify_token
from server.core.errors import Refused
from server.wire.frames import decode_json

MSGPACK = "application/msgpack"
# An answer that carries a credential (a recording link, a page given ?token=): never
# kept by a cache.
NO_STORE = {"Cache-Control": "no-store"}
# A \uD800-\uDFFF escape: half of a pair, or a lone surrogate no text can encode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def wants_msgpack(request: Request) -> bool:
    return MSGPACK in request.headers.get("accept", "")


def respond(
    request: Request, body: Any, status: int = 200, headers: dict | None = None
) -> Response:
    if wants_msgpack(request):
        return Response(msgpack.packb(body, datetime=True), status, headers, media_type=MSGPACK)
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=_json_default),
        status,
        headers,
        media_type="application/json",
    )


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


async def read_bytes(request: Request, limit: int) -> bytes:
    """The raw body; 413 before reading more than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused("malformed", "Content-Length is not a number")
        if int(declared) > limit:
            raise Refused("too_large", f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused("too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: Request, limit: int) -> Any:
    """The decoded body; 413 before reading more than `limit` bytes, 400 when it is not
    JSON (or msgpack, by Content-Type)."""
    raw = await read_bytes(request, limit)
    if MSGPACK in request.headers.get("content-type", ""):
        try:
            return msgpack.unpackb(raw, timestamp=3, strict_map_key=False)
        except Exception:  # msgpack raises several unrelated types for bad input
            raise Refused("malformed", "the body is not valid msgpack") from None
    try:
        body = decode_json(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise Refused("malformed", f"the body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(raw) and not _is_unicode(body):
        # Like invalid UTF-8: no database, and no answer that echoes it, can encode it.
        raise Refused("malformed", "the body is not valid JSON: a lone surrogate escape")
    return body


def _is_unicode(value: Any) -> bool:
    """Whether every string (and key) in a decoded JSON body encodes as UTF-8."""
    stack = [value]
    while stack:  # not recursive: the body may be nested nearly as deep as the decoder allows
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode()
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


async def read_object(request: Request, limit: int) -> dict[str, Any]:
    body = await read_body(request, limit)
    if not isinstance(body, dict):
        raise Refused("malformed", "the body must be an object")
    return body


def authenticate(request: Request, secret: str, clock) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Refused(
            "unauthorized",
            "an Authorization: Bearer token is required",
        )
    try:
        return verify_token(secret, token.strip(), clock)
    except InvalidToken as exc:
        raise Refused("unauthorized", str(exc)) from None


async def principal_of(request: Request) -> Principal:
    """The caller, by its bearer token; its tenant must exist (403 otherwise)."""
    services = request.app.state.services
    principal = authenticate(request, services.settings.secret, services.clock)
    await services.tenants.zone(principal.tenant)
    return principal
