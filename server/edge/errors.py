"""Refusals as HTTP answers: `{"error": {"code", "message", ...}}` with the status that
fits the code. The one table of codes, statuses and meanings (ERRORS); a test holds
every code the server raises to it."""

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

# code -> (HTTP status, when). docs/api.md lists them from here.
ERRORS: dict[str, tuple[int, str]] = {
    "malformed": (400, "The body (or frame) is not JSON or msgpack, or not the right shape."),
    "invalid_cursor": (400, "A cursor this view did not give out."),
    "invalid_payload": (400, "A provider's callback that cannot be read."),
    "unauthorized": (401, "No bearer token, or a bad or expired one."),
    "missing_signature": (401, "A provider's callback without its signature."),
    "forbidden": (403, "The token's role may not do this, or its tenant does not exist."),
    "bad_signature": (403, "A provider's callback whose signature does not match."),
    "not_found": (404, "No such thing, or not one this caller may see."),
    "unknown_subscription": (404, "No such subscription on this socket."),
    "method_not_allowed": (405, "The path does not take this method."),
    "invalid_transition": (
        409,
        "The conversation's status does not take this; the answer carries the current "
        "`conversation`.",
    ),
    "taken": (409, "The offer went to someone else, or was answered already."),
    "expired": (409, "The offer expired."),
    "in_progress": (
        409,
        "The first request with this Idempotency-Key is still in progress, or failed; retry.",
    ),
    "idempotency_key_reused": (409, "This Idempotency-Key came with another body."),
    "no_provider": (
        409,
        "The conversation's channel has no provider configured (PUT /api/v1/providers).",
    ),
    "too_large": (413, "The body is too large, or has too many events."),
    "range_not_satisfiable": (416, "A Range outside the recording."),
    "invalid_field": (422, "A field is invalid: `field` names it, the message says why."),
    "invalid_view": (422, "A view's definition is invalid: `field` names what is wrong."),
    "invalid_data": (422, "An event's data does not fit its type."),
    "invalid_credentials": (422, "A provider's credentials are not complete or not valid."),
    "public_url_required": (
        422,
        "A real provider calls the server back: SWITCHBOARD_PUBLIC_URL must be set first.",
    ),
    "rate_limited": (429, "Too many requests; retry after Retry-After."),
    "too_many_subscriptions": (
        429,
        "A websocket connection already holds as many subscriptions as it may.",
    ),
    "internal": (500, "An unexpected error (never for bad input)."),
    "provider_error": (502, "A provider's API failed (fetching a recording)."),
    "provider_failed": (
        502,
        "The provider refused or did not answer; `conversation_id` (and `message_id`) name "
        "what was recorded.",
    ),
    "unavailable": (503, "A dependency (the database) is down; retry after Retry-After."),
    "over_capacity": (
        503,
        "The server's budget for live windows is spent; retry after `retry_after_s`.",
    ),
}
STATUS: dict[str, int] = {code: status for code, (status, _) in ERRORS.items()}


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
