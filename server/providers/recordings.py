"""Call recordings: a small storage interface (files under the data directory by
default) and who may hear one. Served by server/edge/api/recordings.py.

No path comes from user input: a recording's row is found in the database first
(tenant and conversation checked), and the store names its file from that row's id,
reduced to safe characters or hashed.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from channels.base import Provider, Recording
from server.core.auth import Principal, sees_conversation
from server.core.errors import Refused
from server.core.files import private_dir, private_file
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database

CHUNK = 64 * 1024
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


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
        private_dir(path.parent)
        partial = private_file(path.with_name(path.name + ".download"))
        try:
            await adapter.download_recording(recording, partial)
            private_file(partial)  # a download may have written a new file
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


async def visible_recording(
    db: Database, principal: Principal, conversation_id: str, recording_id: str
) -> dict:
    """The recording's row, when its conversation is one the caller may read (the tenant's,
    and for an agent its own); 404 otherwise, so nothing tells what exists elsewhere."""
    principal.require("supervisor", "admin", "agent")
    missing = Refused("not_found", "no such recording")
    if "\x00" in conversation_id or "\x00" in recording_id:
        raise missing
    async with db.read() as conn:
        row = await repo.get_conversation_row(conn, principal.tenant, conversation_id)
        if row is None or not sees_conversation(principal, row):
            raise missing
        recordings = await repo.rows_of(conn, m.recordings, principal.tenant, conversation_id, [])
    recording = next((r for r in recordings if r["id"] == recording_id), None)
    if recording is None:
        raise missing
    return recording
