"""Where an idle subscribed /ws connection's memory goes: a tracemalloc diff.

    .venv/bin/python -m bench.f1_memory [--conns 1000] [--key filename|lineno|traceback]

Runs the server in this process (uvicorn on uvloop, the config `switchboard serve`
uses, on a throwaway SQLite database), opens a few connections first so that the
shared window and lazy imports are paid, then snapshots the heap before and after
`--conns` more clients (bench/f1_client.js, each subscribed with limit 1000 and a
fetch of 1000, the F1 view) and prints the Python heap per connection by source
line. RSS per connection is printed too, but tracemalloc's own bookkeeping inflates
it: the F1 bench's figure is the one to quote. Not a benchmark: no timings.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

from bench import common as c
from bench.f1_fanout import PEERS_DIR, VIEW, node_path, prepared_peers, rss_kb

WARM_CONNS = 20


async def clients(port: int, token: str, conns: int, peers: Path) -> asyncio.subprocess.Process:
    """`conns` subscribed connections from one Node process, once they are all ready."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(c.BENCH_DIR / "f1_client.js"),
        *("--url", f"ws://127.0.0.1:{port}/ws", "--token", token, "--conns", str(conns)),
        *("--expect", "1", "--view", json.dumps(VIEW), "--limit", "1000", "--fetch", "1000"),
        env=dict(os.environ, NODE_PATH=node_path(str(peers))),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    line = await asyncio.wait_for(proc.stdout.readline(), 300)
    if b'"ready"' not in line:
        raise RuntimeError(f"client did not get ready: {line!r}")
    return proc


async def measure(args, env: dict[str, str], token: str, peers: Path) -> None:
    import uvicorn

    from server.app import create_app
    from server.core.settings import Settings
    from server.serve import uvicorn_config

    app = create_app(Settings.from_env(env), demo=False)
    port = c.free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, loop="none"))
    serving = asyncio.create_task(server.serve())
    for _ in range(300):
        if server.started or serving.done():
            break
        await asyncio.sleep(0.05)
    warm = await clients(port, token, WARM_CONNS, peers)
    gc.collect()
    tracemalloc.start(args.depth)
    rss0, before = rss_kb(os.getpid()), tracemalloc.take_snapshot()
    proc = await clients(port, token, args.conns, peers)
    gc.collect()
    after, rss1 = tracemalloc.take_snapshot(), rss_kb(os.getpid())
    n = args.conns
    heap = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(f"{n} connections: Python heap {heap / n:,.0f} B per connection; RSS (inflated by")
    print(f"tracemalloc) {(rss1 - rss0) * 1024 / n:,.0f} B per connection\n")
    for stat in after.compare_to(before, args.key)[: args.top]:
        if stat.size_diff < n * 16:
            break
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in stat.traceback)
        print(f"{stat.size_diff / n:8,.0f} B {stat.count_diff / n:6.1f} blocks  {where}")
    for client in (proc, warm):
        client.stdin.close()
        await client.wait()
    server.should_exit = True
    await serving


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.f1_memory", description=__doc__)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--key", choices=("filename", "lineno", "traceback"), default="lineno")
    parser.add_argument("--depth", type=int, default=1, help="frames per traceback (1)")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    if args.key == "traceback" and args.depth == 1:
        args.depth = 6
    peers = prepared_peers(PEERS_DIR)
    data_dir = Path(tempfile.mkdtemp(prefix="sb_f1_memory_"))
    env = c.server_env(f"sqlite+aiosqlite:///{data_dir}/switchboard.db", data_dir)
    c.run_cli(["migrate"], env)
    c.run_cli(["tenant", "add", "bench", "--timezone", "Europe/Madrid"], env)
    token = c.run_cli(
        ["token", "--tenant", "bench", "--role", "supervisor", "--user", "bench-sup"], env
    )
    import uvloop

    uvloop.run(measure(args, env, token.strip().splitlines()[-1], peers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
