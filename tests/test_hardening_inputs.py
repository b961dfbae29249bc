"""Issue 17, finding 9: inputs that were a 500, a traceback or bare NaN now get a clear
refusal, and the data directory's files are the server's own user's only."""

from __future__ import annotations

import asyncio
import json
import math
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy import text

from channels.base import Recording
from server.core.settings import Settings
from server.providers.recordings import FileRecordingStore
from server.storage.db import Database
from server.storage.migrate import migrate
from tests.app_support import SECRET
from tests.recording_support import conversation, stored_recording
from tests.server_support import live_server


async def test_a_range_of_thousands_of_digits_is_416_not_500(api, tmp_path):
    await conversation(api, "c1")
    await stored_recording(api, tmp_path, "c1", "r1", b"x" * 1000)
    path = "/api/v1/conversations/c1/recordings/r1"
    huge = "9" * 4301
    for header, status in (
        (f"bytes={huge}-", 416),
        (f"bytes=0{huge}-", 416),
        (f"bytes=0-{huge}", 206),  # to the end of the file
        (f"bytes=-{huge}", 206),  # the last "N" bytes: all of them
        (f"bytes=10-{huge}", 206),
    ):
        response = await api.client.get(path, headers={**api.auth("admin"), "Range": header})
        assert response.status_code == status, (header[:20], response.status_code, response.text)
        if status == 416:
            assert response.json()["error"]["code"] == "range_not_satisfiable"


def _token(claims: dict) -> str:
    base = {"tenant": "acme", "sub": "sup1", "role": "supervisor"}
    return jwt.encode({**base, **claims}, SECRET, algorithm="HS256")


async def test_a_token_with_an_odd_exp_is_401_not_500(api):
    later = int((datetime.now(UTC) + timedelta(hours=1)).timestamp())
    good = await api.client.get("/api/v1/views", headers=_bearer(_token({"exp": later})))
    assert good.status_code == 200, good.text
    for exp in (1e308, float("nan"), float("inf"), -1e308, "2099-01-01", "later", [later],
                {"at": later}, True, 10**30):  # fmt: skip
        response = await api.client.get("/api/v1/views", headers=_bearer(_token({"exp": exp})))
        assert response.status_code == 401, (exp, response.status_code, response.text)
        assert response.json()["error"]["code"] == "unauthorized"
    missing = jwt.encode({"tenant": "acme", "sub": "s", "role": "admin"}, SECRET, "HS256")
    response = await api.client.get("/api/v1/views", headers=_bearer(missing))
    assert response.status_code == 401, response.text


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def test_a_ref_of_nan_or_infinity_is_malformed_and_every_answer_is_json(backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server, server.ws() as ws:
        for raw in (
            '{"type": "ping", "ref": NaN}',
            '{"type": "ping", "ref": Infinity}',
            '{"type": "ping", "ref": -Infinity}',
            '{"type": "ping", "ref": 1e400}',
            '{"type": "subscribe", "ref": 1, "view": {"filters": [NaN]}}',
        ):
            await ws.socket.send(raw)
        await ws.send({"type": "ping", "ref": "last"})
        await ws.wait(lambda f: f.get("ref") == "last")
        errors = [f for f in ws.frames if f["type"] == "error"]
        assert len(errors) == 5, ws.frames
        assert all(e["code"] == "malformed" for e in errors), errors
        assert all(e.get("ref") is None for e in errors), errors
    # The reader parsed each with Python's lenient json; now strictly, as JSON is:
    for frame in ws.frames:
        json.dumps(frame, allow_nan=False)


async def test_http_bodies_with_nan_are_malformed(api):
    response = await api.client.put(
        "/api/v1/teams/sales",
        content=b'{"queue_capacity": NaN}',
        headers={**api.auth("admin"), "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "malformed"
    assert "NaN is not a JSON number" in response.json()["error"]["message"]


async def test_the_data_directory_is_0700_and_its_files_0600(tmp_path):
    data = tmp_path / "var" / "switchboard"
    previous = os.umask(0o022)  # a common umask: without explicit modes, 0755 and 0644
    try:
        settings = Settings.from_env({"SWITCHBOARD_DATA_DIR": str(data)})
        await asyncio.to_thread(migrate, settings.database_url)
        db = Database(settings.database_url)
        try:
            async with db.write() as conn:  # the WAL and shared memory exist while open
                await conn.execute(text("CREATE TABLE probe (x INTEGER)"))
                await conn.execute(text("INSERT INTO probe VALUES (1)"))
            store = FileRecordingStore(data / "recordings")
            await store.fetch("acme", _Downloader(), Recording("r1", 1.0, "audio/wav"))
            files = {
                "secret": data / "secret",
                "database": data / "switchboard.db",
                "wal": data / "switchboard.db-wal",
                "shm": data / "switchboard.db-shm",
                "recording": data / "recordings" / "acme" / "r1",
            }
            modes = {name: stat.S_IMODE(path.stat().st_mode) for name, path in files.items()}
            assert modes == dict.fromkeys(files, 0o600), {k: oct(v) for k, v in modes.items()}
        finally:
            await db.close()
    finally:
        os.umask(previous)
    for folder in (data, data / "recordings", data / "recordings" / "acme"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, (folder, oct(folder.stat().st_mode))


class _Downloader:
    """A provider's download, as any adapter does it: a new file at `destination`."""

    async def download_recording(self, recording: Recording, destination) -> None:
        destination.unlink(missing_ok=True)
        destination.write_bytes(b"RIFF" + bytes(100))


async def test_widget_origins_are_origins_and_the_bad_one_is_named(api):
    good = ["https://shop.example.com", "http://127.0.0.1:8080", "https://[::1]:8443"]
    response = await api.client.put(
        "/api/v1/tenant", json={"widget_origins": good}, headers=api.auth("admin")
    )
    assert response.status_code == 200, response.text
    for bad in ("*", "javascript:alert(1)", "https://shop.example.com/path", "shop.example.com",
                "https://shop.example.com:99999", "ftp://shop.example.com", "https://*.example",
                "https://shop.example.com/", "https://user@shop.example.com", "null"):  # fmt: skip
        response = await api.client.put(
            "/api/v1/tenant",
            json={"widget_origins": ["https://ok.example", bad]},
            headers=api.auth("admin"),
        )
        assert response.status_code == 422, (bad, response.text)
        error = response.json()["error"]
        assert error["field"] == "widget_origins[1]", (bad, error)
        assert "origin" in error["message"], (bad, error)
    stored = await api.client.get("/api/v1/tenant", headers=api.auth("admin"))
    assert stored.json()["widget_origins"] == good


def _token_command(data_dir, ttl: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SWITCHBOARD_DATA_DIR": str(data_dir), "SWITCHBOARD_SECRET": SECRET}
    return subprocess.run(
        [sys.executable, "-m", "server", "token", "--tenant", "acme", "--role", "admin",
         "--user", "adm", "--ttl", ttl],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_a_token_ttl_of_zero_negative_or_huge_is_a_clear_error(tmp_path):
    for ttl in ("0", "-5", str(10**30), str(10**12)):
        done = _token_command(tmp_path, ttl)
        assert done.returncode == 2, (ttl, done.returncode, done.stdout, done.stderr)
        assert "--ttl" in done.stderr, (ttl, done.stderr)
        assert "Traceback" not in done.stderr, (ttl, done.stderr)
        assert done.stdout == "", (ttl, done.stdout)
    done = _token_command(tmp_path, "60")
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), SECRET, algorithms=["HS256"])
    assert 0 < claims["exp"] - datetime.now(UTC).timestamp() <= 60
    assert not math.isnan(claims["exp"])
