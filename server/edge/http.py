"""HTTP plumbing shared by the endpoints: the error format, bodies in JSON or msgpack
(read with a size cap), answers in the format asked for, and authentication."""

from __future__ import annotations

import json
import re
from typing import Any

import msgpack
from starlette.requests import Request
from starlette.responses import Response

from server.core.auth import InvalidToken, Principal, verify_token

MSGPACK = "application/msgpack"
# A \uD800-\uDFFF escape: half of a pair, or a lone surrogate no text can encode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class ApiError(Exception):
    """An answer other than success: `{"error": {"code", "message", ...}}`."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict | None = None, **extra: Any
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


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


def error_response(request: Request, error: ApiError) -> Response:
    return respond(
        request, error_body(error.code, error.message, **error.extra), error.status, error.headers
    )


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


async def read_body(request: Request, limit: int) -> Any:
    """The decoded body; 413 before reading more than `limit` bytes, 400 when it is not
    JSON (or msgpack, by Content-Type)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "malformed", "Content-Length is not a number")
        if int(declared) > limit:
            raise ApiError(413, "too_large", f"the body is larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if MSGPACK in request.headers.get("content-type", ""):
        try:
            return msgpack.unpackb(raw, timestamp=3, strict_map_key=False)
        except Exception:  # msgpack raises several unrelated types for bad input
            raise ApiError(400, "malformed", "the body is not valid msgpack") from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError: JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise ApiError(400, "malformed", f"the body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(raw) and not _is_unicode(body):
        # Like invalid UTF-8: no database, and no answer that echoes it, can encode it.
        raise ApiError(400, "malformed", "the body is not valid JSON: a lone surrogate escape")
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
        raise ApiError(400, "malformed", "the body must be an object")
    return body


def authenticate(request: Request, secret: str, clock) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "unauthorized",
            "an Authorization: Bearer token is required",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        return verify_token(secret, token.strip(), clock)
    except InvalidToken as exc:
        raise ApiError(
            401,
            "unauthorized",
            str(exc),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        ) from None


def require_role(principal: Principal, *roles: str) -> None:
    if not principal.has(*roles):
        raise ApiError(
            403,
            "forbidden",
            f"role {principal.role!r} may not do this (needs {' or '.join(roles)})",
        )
