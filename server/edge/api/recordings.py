"""`GET /api/v1/conversations/{id}/recordings/{recording_id}` with HTTP Range, and
`POST .../{recording_id}/link`, which mints a short-lived link to that recording alone
for an <audio src> (server/providers/recording_links.py)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from server.core.auth import Principal
from server.core.errors import Refused
from server.edge.errors import error_body
from server.edge.http import NO_STORE, principal_of, respond
from server.providers import recording_links
from server.providers.recordings import visible_recording
from server.wire.rows import instant

RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Unsatisfiable(Exception):
    """No byte of the recording is in the range asked for (416)."""

    def __init__(self, size: int):
        super().__init__(f"the range is outside the recording ({size} bytes)")
        self.size = size


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) bytes a Range header asks for; None to send the whole file.
    A header that is not one `bytes=` range is ignored (RFC 9110 allows it); one that
    no byte of the file satisfies raises Unsatisfiable."""
    if header is None:
        return None
    match = RANGE.match(header.strip())
    if match is None or not (match[1] or match[2]):
        return None
    first, last = match[1], match[2]
    if not first:  # a suffix: the last N bytes
        length = _position(last)
        if length == 0 or size == 0:
            raise Unsatisfiable(size)
        return max(0, size - length), size - 1
    start = _position(first)
    end = min(_position(last), size - 1) if last else size - 1
    if last and _position(last) < start:
        return None  # not a valid range: ignored
    if start >= size:
        raise Unsatisfiable(size)
    return start, end


def _position(digits: str) -> int:
    """A byte position of the header; one of more digits than any file's size has is
    past every file (int() refuses over 4,300 digits, and a position needs fewer)."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else 1 << 70


async def _caller(request: Request) -> Principal:
    """The bearer token's principal, or with `?access=` the recording link's: who asked
    for the link, for this recording only (the header is then not read)."""
    services = request.app.state.services
    given = request.query_params.getlist(recording_links.QUERY_PARAMETER)
    if not given:
        return await principal_of(request)
    if len(given) > 1:
        raise Refused("malformed", "one recording link (access) at most")
    principal = recording_links.principal_of_link(
        services.settings.secret,
        given[0],
        request.path_params["conversation_id"],
        request.path_params["recording_id"],
        services.clock,
    )
    await services.tenants.zone(principal.tenant)  # the tenant still exists (403 otherwise)
    return principal


async def post_recording_link(request: Request):
    """A link to play one recording without the header: for an <audio src>."""
    services = request.app.state.services
    principal = await principal_of(request)
    conversation_id = request.path_params["conversation_id"]
    recording = await visible_recording(
        services.db, principal, conversation_id, request.path_params["recording_id"]
    )
    url, expires_at = recording_links.mint_link(
        services.settings.secret, principal, conversation_id, recording["id"], services.clock
    )
    return respond(request, {"url": url, "expires_at": instant(expires_at)}, headers=NO_STORE)


async def get_recording(request: Request):
    services = request.app.state.services
    principal = await _caller(request)
    tenant = principal.tenant
    recording = await visible_recording(
        services.db,
        principal,
        request.path_params["conversation_id"],
        request.path_params["recording_id"],
    )
    size = services.recordings.size(tenant, recording["id"])
    if size is None:
        raise Refused("not_found", "the recording is not stored (yet)")
    try:
        wanted = byte_range(request.headers.get("range"), size)
    except Unsatisfiable as error:
        body = error_body("range_not_satisfiable", str(error))
        headers = {"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}
        return respond(request, body, 416, headers)
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    media_type = recording["content_type"]
    if wanted is None:
        status, (start, end) = 200, (0, size - 1)
    else:
        status, (start, end) = 206, wanted
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1 if size else 0)
    if size == 0:
        return Response(b"", status, headers, media_type=media_type)
    return StreamingResponse(
        services.recordings.read(tenant, recording["id"], start, end), status, headers, media_type
    )
