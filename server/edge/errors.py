"""Refusals as HTTP answers: `{"error": {"code", "message", ...}}` with the status that
fits the code. The one table of codes and statuses; a test holds every code the server
raises to it."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from server.core.errors import Refused
from server.edge.http import respond
from server.storage.db import DatabaseUnavailable, is_unavailable

log = logging.getLogger("switchboard.http")

STATUS: dict[str, int] = {
    "malformed": 400,
    "invalid_cursor": 400,
    "invalid_payload": 400,
    "unauthorized": 401,
    "missing_signature": 401,
    "forbidden": 403,
    "bad_signature": 403,
    "not_found": 404,
    "unknown_subscription": 404,
    "method_not_allowed": 405,
    "invalid_transition": 409,
    "taken": 409,
    "expired": 409,
    "in_progress": 409,
    "idempotency_key_reused": 409,
    "too_large": 413,
    "range_not_satisfiable": 416,
    "invalid_field": 422,
    "invalid_view": 422,
    "invalid_data": 422,
    "invalid_credentials": 422,
    "rate_limited": 429,
    "internal": 500,
    "provider_error": 502,
    "unavailable": 503,
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def refusal_response(request: Request, refusal: Refused) -> Response:
    headers = {}
    extra = dict(refusal.extra)
    if refusal.retry_after_s is not None:
        headers["Retry-After"] = str(max(1, int(refusal.retry_after_s + 0.999)))
    if refusal.code == "unauthorized":
        headers["WWW-Authenticate"] = "Bearer"
    body = error_body(refusal.code, refusal.message, **extra)
    return respond(request, body, STATUS[refusal.code], headers)


async def on_refused(request: Request, refusal: Refused) -> Response:
    return refusal_response(request, refusal)


async def on_http_error(request: Request, exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return respond(request, error_body(code, str(exc.detail)), exc.status_code, exc.headers)


async def on_database_down(request: Request, exc: DatabaseUnavailable) -> Response:
    log.warning("database unavailable", extra={"error": str(exc)})
    refusal = Refused("unavailable", "the database is unavailable; retry", retry_after_s=2)
    return refusal_response(request, refusal)


async def on_database_error(request: Request, exc: Exception) -> Response:
    if is_unavailable(exc):
        return await on_database_down(request, DatabaseUnavailable(str(exc)))
    return await on_unexpected(request, exc)


async def on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return respond(request, error_body("internal", "internal error"), 500)


HANDLERS = {
    Refused: on_refused,
    HTTPException: on_http_error,
    DatabaseUnavailable: on_database_down,
    DBAPIError: on_database_error,
    OSError: on_database_error,
    Exception: on_unexpected,
}
