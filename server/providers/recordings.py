"""Call recordings: a small storage interface (files under the data directory by
default), `GET /api/v1/conversations/{id}/recordings/{recording_id}` with HTTP Range,
and `POST .../{recording_id}/link`, which mints a short-lived link to that recording
alone for an <audio src> (server/recording_links.py).

No path comes from user input: the endpoint finds the recording's row in the
database first (tenant and conversation checked), and the store names its file from
that row's id, reduced to safe characters or hashed.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from channels.base import Provider, Recording
from server.core.auth import Principal
from server.edge.api.conversations import visible_to
from server.edge.http import ApiError, require_role, respond
from server.providers import recording_links
from server.storage import models as m
from server.storage import repository as repo
from server.wire.rows import instant

CHUNK = 64 * 1024
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
NO_STORE = {"Cache-Control": "no-store"}  # a link is a credential: never kept by a cache


class RecordingStore(Protocol):
    async def fetch(self, tenant: str, adapter: Provider, recording: Recording) -> None:
        """Copy a provider's recording into the store (once; again is a no-op)."""

    def size(self, tenant: str, recording_id: str) -> int | None:
        """Its size in bytes, or None when it is not stored."""

    def read(self, tenant: str, recording_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes start..end (inclusive)."""


def safe_name(value: str) -> str:
    """A file name for an id: the id itself when it is plainly safe, else its hash."""
    if SAFE_NAME.match(value):
        return value
    return "h-" + hashlib.sha256(value.encode()).hexdigest()


class FileRecordingStore:
    """<root>/<tenant>/<recording id>, written whole or not at all."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, tenant: str, recording_id: str) -> Path:
        return self.root / safe_name(tenant) / safe_name(recording_id)

    async def fetch(self, tenant: str, adapter: Provider, recording: Recording) -> None:
        path = self._path(tenant, recording.recording_id)
        if path.is_file():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".download")
        try:
            await adapter.download_recording(recording, partial)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)

    def size(self, tenant: str, recording_id: str) -> int | None:
        path = self._path(tenant, recording_id)
        return path.stat().st_size if path.is_file() else None

    async def read(
        self, tenant: str, recording_id: str, start: int, end: int
    ) -> AsyncIterator[bytes]:
        path = self._path(tenant, recording_id)
        handle = await asyncio.to_thread(path.open, "rb")
        try:
            await asyncio.to_thread(handle.seek, start)
            left = end - start + 1
            while left > 0:
                chunk = await asyncio.to_thread(handle.read, min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                yield chunk
        finally:
            handle.close()


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) bytes a Range header asks for; None to send the whole file.
    A header that is not one `bytes=` range is ignored (RFC 9110 allows it); one that
    no byte of the file satisfies raises 416."""
    if header is None:
        return None
    match = RANGE.match(header.strip())
    if match is None or not (match[1] or match[2]):
        return None
    first, last = match[1], match[2]
    if not first:  # a suffix: the last N bytes
        length = int(last)
        if length == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(0, size - length), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return None  # not a valid range: ignored
    if start >= size:
        raise _unsatisfiable(size)
    return start, end


def _unsatisfiable(size: int) -> ApiError:
    return ApiError(
        416,
        "range_not_satisfiable",
        f"the range is outside the recording ({size} bytes)",
        headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
    )


async def _visible_recording(sb, principal: Principal, conversation_id: str, recording_id: str):
    """The recording's row, when its conversation is one the caller may read (the tenant's,
    and for an agent its own); 404 otherwise, so nothing tells what exists elsewhere."""
    require_role(principal, "supervisor", "admin", "agent")
    missing = ApiError(404, "not_found", "no such recording")
    if "\x00" in conversation_id or "\x00" in recording_id:
        raise missing
    async with sb.db.read() as conn:
        row = await repo.get_conversation_row(conn, principal.tenant, conversation_id)
        if row is None or not visible_to(principal, row):
            raise missing
        recordings = await repo.rows_of(conn, m.recordings, principal.tenant, conversation_id, [])
    recording = next((r for r in recordings if r["id"] == recording_id), None)
    if recording is None:
        raise missing
    return recording


async def _caller(request: Request) -> Principal:
    """The bearer token's principal, or with `?access=` the recording link's: who asked
    for the link, for this recording only (the header is then not read)."""
    sb = request.app.state.sb
    given = request.query_params.getlist(recording_links.QUERY_PARAMETER)
    if not given:
        return await sb.principal(request)
    if len(given) > 1:
        raise ApiError(400, "malformed", "one recording link (access) at most")
    principal = recording_links.principal_of_link(
        sb.settings.secret,
        given[0],
        request.path_params["conversation_id"],
        request.path_params["recording_id"],
        sb.clock,
    )
    await sb.tenant_zone(principal.tenant)  # the tenant still exists (403 otherwise)
    return principal


async def post_recording_link(request: Request):
    """A link to play one recording without the header: for an <audio src>."""
    sb = request.app.state.sb
    principal = await sb.principal(request)
    conversation_id = request.path_params["conversation_id"]
    recording = await _visible_recording(
        sb, principal, conversation_id, request.path_params["recording_id"]
    )
    url, expires_at = recording_links.mint_link(
        sb.settings.secret, principal, conversation_id, recording["id"], sb.clock
    )
    return respond(request, {"url": url, "expires_at": instant(expires_at)}, headers=NO_STORE)


async def get_recording(request: Request):
    sb = request.app.state.sb
    principal = await _caller(request)
    tenant = principal.tenant
    recording = await _visible_recording(
        sb, principal, request.path_params["conversation_id"], request.path_params["recording_id"]
    )
    size = sb.recordings.size(tenant, recording["id"])
    if size is None:
        raise ApiError(404, "not_found", "the recording is not stored (yet)")
    wanted = byte_range(request.headers.get("range"), size)
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
        sb.recordings.read(tenant, recording["id"], start, end), status, headers, media_type
    )
