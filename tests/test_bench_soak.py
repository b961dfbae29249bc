"""The soak bench (bench/soak.py) runs, in its short mode, on both backends: a smoke
check that the scenario works end to end (honest clients, every attacker, the report),
with no assertion on its figures."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

from tests.support import TEST_DATABASE_URL, TEST_REDIS_URL

REPO = Path(__file__).resolve().parent.parent


async def test_the_soak_bench_runs_in_its_short_mode(backend, tmp_path):
    args = ["--quick", "--soak-duration", "1.5", "--soak-seed", "100", "--soak-out", str(tmp_path)]
    if backend.name == "postgresql-redis":
        args += ["--soak-database-url", TEST_DATABASE_URL, "--soak-redis-url", TEST_REDIS_URL]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", "soak", *args,
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 240)
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    for part in ("| quiet |", "| attack |", "under attack / quiet", "server RSS: start"):
        assert part in text, (part, text[-3000:])
    assert re.search(r"rows wrong at the end: \d+", text), text[-3000:]
    # Every attacker got through to the server at least once.
    for attacker in ("pipeliner", "flooder", "views", "webchat", "time", "oversize", "tokens"):
        assert f"| {attacker}: " in text, (attacker, text[-3000:])
    assert list(tmp_path.glob("soak-*.md")) and list(tmp_path.glob("soak-*.jsonl"))
