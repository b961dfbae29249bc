"""The wheel carries what an installed server needs beside its code: the pages
(static/, as server/static) and the migrations. Built and installed for real, then
imported from outside the checkout."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = (".*", "build", "dist", "data", "*.egg-info", "__pycache__", "out")
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
# Run by the installed copy: where it finds its pages and migrations, and what is there.
PROBE = """
import json, server.edge.pages, server.storage.migrate, server.providers.webchat
static, migrations = server.edge.pages.STATIC, server.storage.migrate.MIGRATIONS
print(json.dumps({
    "static": str(static.resolve()),
    "migrations": str(migrations.resolve()),
    "files": sorted(p.relative_to(static).as_posix() for p in static.rglob("*") if p.is_file()),
    "versions": sorted(p.name for p in (migrations / "versions").glob("*.py")),
}))
"""


def files_under(folder: Path, pattern: str = "*") -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob(pattern) if p.is_file())


def test_an_installed_wheel_finds_its_pages_and_migrations(tmp_path):
    # Built from a copy: a build in the checkout would reuse what an earlier one left
    # in build/, and the test would see that instead of what the project declares.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    pip = {"check": True, "timeout": 300, "cwd": tmp_path}
    subprocess.run([*PIP, "wheel", "--no-deps", "-w", str(tmp_path / "dist"), str(source)], **pip)
    (wheel,) = (tmp_path / "dist").glob("switchboard-*.whl")
    site = tmp_path / "site"
    subprocess.run([*PIP, "install", "--no-deps", "--target", str(site), str(wheel)], **pip)
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,  # not the checkout: its server/ must not be the one imported
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    found = json.loads(done.stdout)
    assert Path(found["static"]).is_relative_to(site)
    assert Path(found["migrations"]).is_relative_to(site)
    assert "views.html" in found["files"] and "js/live.js" in found["files"]
    assert found["files"] == files_under(ROOT / "static")  # every page, script, style sheet
    assert found["versions"] == sorted(
        p.name for p in (ROOT / "server" / "storage" / "migrations" / "versions").glob("*.py")
    )
