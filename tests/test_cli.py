"""The `switchboard` console script, run for real as subprocesses on the embedded
defaults (SQLite and the secret under SWITCHBOARD_DATA_DIR): migrate, tenant add,
token and serve."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from server.core.auth import verify_token
from tests.support import free_port, wait_until

SCRIPT = Path(sys.executable).parent / "switchboard"
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "server"]
# What would point the command elsewhere than the data directory's defaults.
FOREIGN = ("DATABASE_URL", "REDIS_URL", "SWITCHBOARD_SECRET", "SWITCHBOARD_BUS_PREFIX")


def environment(data_dir: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in FOREIGN}
    env["SWITCHBOARD_DATA_DIR"] = str(data_dir)
    return env


def switchboard(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*COMMAND, *args],
        env=environment(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def tenants(data_dir: Path) -> list[tuple]:
    with sqlite3.connect(data_dir / "switchboard.db") as db:
        return db.execute("SELECT id, timezone, routing FROM tenants ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A data directory migrated (twice: it is idempotent) with tenant acme."""
    data_dir = tmp_path_factory.mktemp("data")
    for _ in range(2):
        done = switchboard(data_dir, "migrate")
        assert done.returncode == 0, done.stderr
        assert "up to date" in done.stdout
    assert (data_dir / "switchboard.db").exists()
    assert tenants(data_dir) == []
    done = switchboard(data_dir, "tenant", "add", "acme", "--timezone", "Europe/Madrid")
    assert done.returncode == 0, done.stderr
    assert "acme" in done.stdout
    return data_dir


def test_migrate_tenant_add_and_token(data_dir):
    done = switchboard(
        data_dir, "tenant", "add", "globex", "--timezone", "America/New_York", "--routing",
        "external",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr

    again = switchboard(data_dir, "tenant", "add", "acme", "--timezone", "Europe/Paris")
    assert again.returncode == 2
    assert "acme" in again.stderr and "already exists" in again.stderr
    bad_zone = switchboard(data_dir, "tenant", "add", "initech", "--timezone", "Mars/Olympus")
    assert bad_zone.returncode == 2
    assert "Mars/Olympus" in bad_zone.stderr and "time zone" in bad_zone.stderr
    bad_name = switchboard(data_dir, "tenant", "add", "Not A Slug", "--timezone", "UTC")
    assert bad_name.returncode == 2
    assert "name" in bad_name.stderr
    for failed in (again, bad_zone, bad_name):
        assert "Traceback" not in failed.stderr
    assert tenants(data_dir) == [
        ("acme", "Europe/Madrid", "builtin"),
        ("globex", "America/New_York", "external"),
    ]

    done = switchboard(data_dir, "token", "--tenant", "acme", "--role", "supervisor", "--user",
                       "sup1")  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    assert token and " " not in token
    secret = (data_dir / "secret").read_text().strip()
    principal = verify_token(secret, token)
    assert (principal.tenant, principal.user, principal.role) == ("acme", "sup1", "supervisor")
    expected = datetime.now(UTC) + timedelta(hours=12)
    assert abs((principal.expires_at - expected).total_seconds()) < 120

    done = switchboard(data_dir, "token", "--tenant", "acme", "--role", "agent", "--user", "a1",
                       "--ttl", "60")  # fmt: skip
    principal = verify_token(secret, done.stdout.strip().splitlines()[-1])
    assert principal.role == "agent"
    assert (principal.expires_at - datetime.now(UTC)).total_seconds() <= 60
    refused = switchboard(data_dir, "token", "--tenant", "acme", "--role", "root", "--user", "x")
    assert refused.returncode == 2
    assert "role" in refused.stderr


def test_migrate_seals_provider_credentials_an_older_server_stored_as_they_were(data_dir):
    token = "older-servers-plain-token"
    plain = json.dumps({"account_sid": "AC" + "0" * 32, "auth_token": token})
    with sqlite3.connect(data_dir / "switchboard.db") as db:
        db.execute(
            "INSERT INTO providers VALUES ('acme', 'twilio', '[\"sms\"]', '[]', ?, "
            "'2026-11-26 10:00:00.000000')",
            (plain,),
        )
    done = switchboard(data_dir, "migrate")
    assert done.returncode == 0, done.stderr
    assert "sealed the stored credentials of 1 provider(s)" in done.stdout
    with sqlite3.connect(data_dir / "switchboard.db") as db:
        (stored,) = db.execute(
            "SELECT credentials FROM providers WHERE tenant_id = 'acme' AND provider = 'twilio'"
        ).fetchone()
    assert stored.startswith('{"sealed": "v1.') and token not in stored
    again = switchboard(data_dir, "migrate")
    assert again.returncode == 0 and "sealed" not in again.stdout


def test_serve_answers_health_and_stops_when_terminated(data_dir):
    token = switchboard(
        data_dir, "token", "--tenant", "acme", "--role", "admin", "--user", "adm"
    ).stdout.strip().splitlines()[-1]  # fmt: skip
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [*COMMAND, "serve", "--no-demo", "--host", "127.0.0.1", "--port", str(port)],
        env=environment(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def healthy() -> bool:
            assert server.poll() is None, f"the server exited: {server.stderr.read()}"
            try:
                return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, timeout=30, message="switchboard serve answering /healthz")
        ready = httpx.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json()["database"] == "ok"
        # A token minted by the command line, with the secret kept in the data directory.
        tenant = httpx.get(
            f"{base}/api/v1/tenant", headers={"Authorization": f"Bearer {token}"}, timeout=5
        )
        assert tenant.status_code == 200, tenant.text
        assert tenant.json()["timezone"] == "Europe/Madrid"
        assert httpx.get(f"{base}/api/v1/tenant", timeout=5).status_code == 401

        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=20)
        assert code in (0, -signal.SIGTERM), code
        try:
            httpx.get(f"{base}/healthz", timeout=1)
        except httpx.TransportError:
            pass
        else:
            raise AssertionError("the server still answers after it was terminated")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)
        server.stderr.close()
