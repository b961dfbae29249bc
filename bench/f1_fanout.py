"""F1 live fan-out: one server process, C websocket clients on one view.

Each round runs, one after the other on the same machine:

* switchboard  a fresh PostgreSQL database and a fresh `switchboard serve --no-demo`
               (in-process bus), pinned to core 0. C connections from one Node process
               (bench/f1_client.js, pinned to core 1) each subscribe to the same inline
               view (channel = chat) with limit 1000 and then `fetch` 1000 more: a window
               of 2,000 rows. The bench then posts `--f1-rows` new chat conversations over
               HTTP in batches of `--f1-batch` (one keep-alive connection, each batch
               waits for its answer). Each event's customer name is "t<epoch ms>" taken
               right before its batch is written, so the client gets post -> receive
               latency from the row itself.
* A2 (floor)   the peers harness's `websockets.broadcast()` on uvloop, via its run_one.py,
               MSGS = rows, CONNS = C (server core 0, client core 1).
* C1 socket.io Node socket.io room emit, same.

Reported per server: row deliveries/s (rows received by all clients / time from the first
post, or the peer's first send stamp, to the last receive), server CPU-s per 100k
deliveries (Switchboard: ingest included; PostgreSQL's CPU shown apart), p50/p99 ms post ->
receive, RSS per idle subscribed connection, and each ratio against A2 and C1 of the same
round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common as c
from bench.f3_ingest import prepare

TITLE = "live fan-out: C clients on one 2,000-row window, 2,000 new rows in batches of 50"
PEERS_DIR = os.environ.get(
    "BENCH_PEERS_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "peers")
)
PEERS_COPY = Path(__file__).parent / "out" / "peers"


def prepared_peers(source: str) -> Path:
    """The peers harness with its venv and node_modules: `source` itself when it has
    them, else a copy under bench/out/peers, installed once (the shared folder is
    read-only)."""

    def ready(path: Path) -> bool:
        return (path / ".venv/bin/python").exists() and (path / "node_modules").exists()

    if ready(Path(source)):
        return Path(source)
    if not ready(PEERS_COPY):
        shutil.copytree(
            source,
            PEERS_COPY,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("raw-*", "results*", ".venv", "node_modules"),
        )
        for path in [PEERS_COPY, *PEERS_COPY.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        subprocess.run(["python3", "-m", "venv", str(PEERS_COPY / ".venv")], check=True)
        subprocess.run(
            [
                str(PEERS_COPY / ".venv/bin/pip"),
                "install",
                "-q",
                "-r",
                str(PEERS_COPY / "requirements.txt"),
            ],
            check=True,
        )
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=PEERS_COPY, check=True)
    return PEERS_COPY


PEER_VARIANTS = {
    # id: (label, client mode, server command (PORT replaced), url)
    "A2": (
        "websockets broadcast(), uvloop (floor)",
        "raw",
        "{py} srv_websockets.py --port {port} --uvloop --msgs {msgs}",
        "ws://127.0.0.1:{port}/",
    ),
    "C1": (
        "Node socket.io room emit",
        "sioraw",
        "node srv_socketio.js --port {port} --msgs {msgs}",
        "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket",
    ),
    "D1": (
        "python-socketio emit(room)",
        "sioraw",
        "{py} srv_pysocketio.py --port {port} --msgs {msgs}",
        "ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket",
    ),
}


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--f1-conns", type=int, default=1000, help="websocket clients (1000)")
    group.add_argument("--f1-rows", type=int, default=2000, help="new conversations (2000)")
    group.add_argument("--f1-batch", type=int, default=50, help="events per POST (50)")
    group.add_argument(
        "--f1-pace-ms",
        type=float,
        default=0.0,
        help="Switchboard's poster: a batch every this many ms (0: back to back)",
    )
    group.add_argument(
        "--f1-peers", default="A2,C1", help="peer variants per round, among A2,C1,D1 (A2,C1)"
    )
    group.add_argument(
        "--f1-peers-dir",
        default=PEERS_DIR,
        help="a copy of the peers harness with .venv and node_modules installed "
        "(env BENCH_PEERS_DIR)",
    )
    group.add_argument("--f1-timeout", type=float, default=120, help="per run, seconds (120)")
    group.add_argument(
        "--f1-push-ms",
        default="",
        help="Switchboard push intervals to compare, e.g. 0,5,10,20,50: each round runs "
        "Switchboard once per value (SWITCHBOARD_PUSH_INTERVAL_MS); default: the server's own",
    )


# --------------------------------------------------------------------------- helpers


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def pin(pid: int, cpu: int) -> None:
    """Pin every thread of pid to one core (like the harness's taskset)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(task), {cpu})
        except OSError:
            pass


def read_line(proc: subprocess.Popen, want: str, timeout: float) -> dict:
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"client exited (rc={proc.poll()}) before '{want}'")
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if obj.get("event") == "error":
            raise RuntimeError("client error: " + obj.get("message", ""))
        if obj.get("event") == want:
            return obj
    raise RuntimeError(f"timeout waiting for client '{want}'")


def stop_proc(proc: subprocess.Popen | None, grace: float = 5) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def node_path(peers_dir: str) -> str:
    return str(Path(peers_dir) / "node_modules")


# --------------------------------------------------------------------------- switchboard


VIEW = {
    "filters": [{"field": "channel", "op": "in", "value": ["chat"]}],
    "columns": ["id", "customer_name", "status"],
}


async def post_all(
    port: int, token: str, rows: int, batch: int, tag: str, pace_ms: float = 0.0
) -> dict[str, Any]:
    """Every row in batches over one connection: back to back, or with `pace_ms` a
    batch every pace_ms (when the one before has been answered)."""
    conn = await c.HttpConnection.open(port)
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    first = None
    errors = 0
    applied = 0
    post_ms: list[float] = []
    try:
        for number, start in enumerate(range(0, rows, batch)):
            if pace_ms:
                due = started + number * pace_ms / 1000
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            now_ms = time.time() * 1000
            iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now_ms / 1000))
            iso += f".{int(now_ms % 1000):03d}Z"
            events = [
                {
                    "event_id": f"{tag}-{n}",
                    "type": "conversation.created",
                    "conversation_id": f"{tag}-{n}",
                    "occurred_at": iso,
                    "data": {
                        "channel": "chat",
                        "contact": f"visitor-{tag}-{n}",
                        "customer": {"name": f"t{time.time() * 1000:.3f}"},
                    },
                }
                for n in range(start, min(rows, start + batch))
            ]
            body = json.dumps({"events": events}).encode()
            if first is None:
                first = time.time() * 1000
            sent = time.perf_counter()
            status, answer = await conn.request(
                c.http_request("POST", "/api/v1/events", port, body, headers)
            )
            post_ms.append((time.perf_counter() - sent) * 1000)
            if status != 200:
                errors += 1
            applied += answer.count(b'"outcome":"applied"')
        last = time.time() * 1000
    finally:
        conn.close()
    return {
        "first_post_ms": first,
        "last_post_ms": last,
        "post_errors": errors,
        "applied": applied,
        "post_p50_ms": c.percentile(post_ms, 50),
        "post_max_ms": max(post_ms),
    }


def switchboard_name(push_ms: str) -> str:
    return f"switchboard {push_ms} ms" if push_ms else "switchboard"


def run_switchboard(args, recorder: c.Recorder, round_no: int, push_ms: str = "") -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="sb_bench_f1_"))
    database = c.run_async(c.create_database(c.ADMIN_URL, "sb_bench_f1"))
    rec: dict[str, Any] = {
        "type": "run",
        "server": switchboard_name(push_ms),
        "push_ms": push_ms,
        "round": round_no,
        "conns": args.f1_conns,
        "rows": args.f1_rows,
    }
    client = None
    try:
        env = c.server_env(c.with_database(c.ADMIN_URL, database), data_dir)
        if push_ms:
            env["SWITCHBOARD_PUSH_INTERVAL_MS"] = push_ms
        tokens = prepare(env)
        out = c.run_cli(
            ["token", "--tenant", "bench", "--role", "supervisor", "--user", "bench-sup"], env
        )
        tokens["supervisor"] = out.strip().splitlines()[-1]
        with c.ServerProcess(env, recorder.path(f"-r{round_no}-server.log")) as server:
            pin(server.pid, 0)
            time.sleep(0.5)
            rec["rss_base_kb"] = rss_kb(server.pid)
            client_env = dict(os.environ, NODE_PATH=node_path(args.f1_peers_dir))
            client = subprocess.Popen(
                [
                    "node",
                    str(c.BENCH_DIR / "f1_client.js"),
                    "--url",
                    f"ws://127.0.0.1:{server.port}/ws",
                    "--token",
                    tokens["supervisor"],
                    "--conns",
                    str(args.f1_conns),
                    "--expect",
                    str(args.f1_rows),
                    "--view",
                    json.dumps(VIEW),
                    "--limit",
                    "1000",
                    "--fetch",
                    "1000",
                    "--timeout",
                    str(args.f1_timeout),
                ],
                env=client_env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                preexec_fn=lambda: os.sched_setaffinity(0, {1}),
            )
            ready = read_line(client, "ready", 180)
            rec["connect_s"] = ready["connect_s"]
            time.sleep(1.0)
            rec["rss_conns_kb"] = rss_kb(server.pid)
            rec["bytes_per_conn"] = (
                (rec["rss_conns_kb"] - rec["rss_base_kb"]) * 1024 / args.f1_conns
            )
            pin(server.pid, 0)  # threads started since
            meter = c.CpuMeter(server.pid, database=database)
            client_cpu0 = c.proc_cpu_seconds(client.pid)
            meter.start()
            client.stdin.write("GO\n")
            client.stdin.flush()
            read_line(client, "go", 10)
            posted = c.run_async(
                post_all(
                    server.port,
                    tokens["service"],
                    args.f1_rows,
                    args.f1_batch,
                    f"r{round_no}",
                    args.f1_pace_ms,
                )
            )
            done = read_line(client, "done", args.f1_timeout + 30)
            cpu = meter.stop()
            rec["node_client_cpu_s"] = c.proc_cpu_seconds(client.pid) - client_cpu0
            rec["rss_after_kb"] = rss_kb(server.pid)
            rec.update(posted)
            rec.update({k: v for k, v in done.items() if k != "event"})
            rec.update(cpu)
            delivered = min(done["delivered"], done["expected"])
            dur = (done["last_recv_ms"] - posted["first_post_ms"]) / 1000
            rec["duration_s"] = dur
            rec["deliveries_per_s"] = delivered / dur if dur > 0 else float("nan")
            rec["server_cpu_s_per_100k"] = cpu["server_cpu_s"] / max(1, delivered) * 1e5
            rec["postgres_cpu_s_per_100k"] = cpu["postgres_cpu_s"] / max(1, delivered) * 1e5
            rec["client_cores"] = rec["node_client_cpu_s"] / cpu["wall_s"]
            rec["server_cores"] = cpu["server_cpu_s"] / cpu["wall_s"]
            rec["p50_ms"], rec["p99_ms"] = done["lat_ms"]["p50"], done["lat_ms"]["p99"]
            rec["ok"] = done["reason"] == "complete"
            if client.stdin:
                client.stdin.close()
            stop_proc(client, 3)
    except Exception as exc:
        rec["ok"] = False
        rec["error"] = repr(exc)
        print(f"  switchboard round {round_no} failed: {exc!r}", file=sys.stderr)
    finally:
        stop_proc(client, 2)
        c.run_async(c.drop_database(c.ADMIN_URL, database))
        shutil.rmtree(data_dir, ignore_errors=True)
    recorder.line(**rec)
    return rec


# --------------------------------------------------------------------------- peers


def run_peer(args, variant: str, recorder: c.Recorder, round_no: int) -> dict[str, Any]:
    label, mode, server, url = PEER_VARIANTS[variant]
    peers = Path(args.f1_peers_dir)
    port = c.free_port()
    py = str(peers / ".venv/bin/python")
    out = recorder.path(f"-peers-r{round_no}.jsonl")
    command = [
        py,
        str(peers / "run_one.py"),
        "--name",
        variant,
        "--label",
        label,
        "--rep",
        str(round_no),
        "--port",
        str(port),
        "--server",
        server.format(py=py, port=port, msgs=args.f1_rows),
        "--url",
        url.format(port=port),
        "--client-mode",
        mode,
        "--conns",
        str(args.f1_conns),
        "--msgs",
        str(args.f1_rows),
        "--timeout",
        str(args.f1_timeout),
        "--out",
        str(out),
        "--logdir",
        str(c.OUT_DIR / "f1-peer-logs"),
    ]
    try:
        subprocess.run(
            command,
            cwd=peers,
            timeout=args.f1_timeout + 120,
            check=False,
            stdout=subprocess.DEVNULL,
        )
        line = out.read_text().splitlines()[-1]
        got = json.loads(line)
    except Exception as exc:
        got = {"ok": False, "error": repr(exc)}
    rec = {"type": "run", "server": variant, "label": label, "round": round_no, **got}
    if "lat_ms" in got:
        rec["p50_ms"], rec["p99_ms"] = got["lat_ms"]["p50"], got["lat_ms"]["p99"]
    if got.get("client_cpu_s") is not None and got.get("cpu_window_s"):
        rec["client_cores"] = got["client_cpu_s"] / got["cpu_window_s"]
        rec["server_cores"] = got["server_cpu_s"] / got["cpu_window_s"]
    recorder.line(**rec)
    return rec


# --------------------------------------------------------------------------- report


def report(info, runs, args) -> str:
    sb_names = [switchboard_name(ms) for ms in args.push_ms]
    servers = [*sb_names, *[p for p in args.peers]]
    names = {
        **{
            name: f"Switchboard /ws{f', push interval {ms} ms' if ms else ''} (ingest included)"
            for name, ms in zip(sb_names, args.push_ms, strict=True)
        },
        **{k: f"{k}: {v[0]}" for k, v in PEER_VARIANTS.items()},
    }
    header = [
        "server",
        "ok runs",
        "deliveries/s",
        "server CPU-s per 100k",
        "p50 ms",
        "p99 ms",
        "bytes/conn (idle, subscribed)",
        "server cores",
        "client cores",
    ]
    table = []
    for s in servers:
        rows = [r for r in runs if r["server"] == s and r.get("ok")]
        allrows = [r for r in runs if r["server"] == s]

        def col(key, digits=0, rows=rows):
            return c.spread([r.get(key, float("nan")) for r in rows], digits)

        table.append(
            [
                names[s],
                f"{len(rows)}/{len(allrows)}",
                col("deliveries_per_s"),
                col("server_cpu_s_per_100k", 2),
                col("p50_ms", 1),
                col("p99_ms", 1),
                col("bytes_per_conn"),
                col("server_cores", 2),
                col("client_cores", 2),
            ]
        )
    parts = [
        f"### F1 live fan-out, {info['date']}",
        "",
        c.describe_machine(info),
        f"* load: C = {args.f1_conns} clients, {args.f1_rows} rows (peers: messages) each, "
        f"Switchboard posts in batches of {args.f1_batch}; {args.runs} rounds, each runs "
        "every server once; median (min-max) of the successful runs",
        "",
        c.markdown_table(header, table),
        "",
        "Ratios against the peers of the same round (median (min-max) over rounds):",
        "",
    ]
    for name in sb_names:
        sb = {r["round"]: r for r in runs if r["server"] == name and r.get("ok")}
        for peer in args.peers:
            pr = {r["round"]: r for r in runs if r["server"] == peer and r.get("ok")}
            both = sorted(set(sb) & set(pr))
            if not both:
                continue
            rate = [sb[k]["deliveries_per_s"] / pr[k]["deliveries_per_s"] for k in both]
            cpu = [sb[k]["server_cpu_s_per_100k"] / pr[k]["server_cpu_s_per_100k"] for k in both]
            p99 = [sb[k]["p99_ms"] / pr[k]["p99_ms"] for k in both]
            rounds = ", ".join(f"{rate[n]:.2f}/{cpu[n]:.2f}/{p99[n]:.2f}" for n in range(len(both)))
            parts.append(
                f"* {name} vs {peer}: deliveries/s {c.spread(rate, 2)}x, CPU per delivery "
                f"{c.spread(cpu, 2)}x, p99 {c.spread(p99, 2)}x ({len(both)} rounds; "
                f"rate/CPU/p99 round by round: {rounds})"
            )
    for name in sb_names:
        extra = [r for r in runs if r["server"] == name and r.get("ok")]
        if not extra:
            continue
        parts += [
            "",
            f"{name} detail: POST of a batch p50 "
            + c.spread([r["post_p50_ms"] for r in extra], 1)
            + " ms, max "
            + c.spread([r["post_max_ms"] for r in extra], 1)
            + " ms; latency min "
            + c.spread([r["lat_ms"]["min"] for r in extra], 1)
            + " ms, p90 "
            + c.spread([r["lat_ms"]["p90"] for r in extra], 1)
            + " ms, max "
            + c.spread([r["lat_ms"]["max"] for r in extra], 1)
            + " ms; Node client CPU-s "
            + c.spread([r["node_client_cpu_s"] for r in extra], 2)
            + "; PostgreSQL backend CPU-s per 100k deliveries "
            + c.spread([r["postgres_cpu_s_per_100k"] for r in extra], 3)
            + "; delta frames received "
            + c.spread([r["frames"] for r in extra])
            + " (rows per frame "
            + c.spread([r["delivered"] / max(1, r["frames"]) for r in extra], 1)
            + "); seq gaps "
            + c.spread([r["seq_gaps"] for r in extra])
            + ", resyncs "
            + c.spread([r["resyncs"] for r in extra])
            + "; others' cores "
            + c.spread([r["others_cores"] for r in extra], 2)
            + "; machine busy "
            + c.spread([r["machine_busy"] for r in extra], 0, 100)
            + " %",
        ]
    failed = [r for r in runs if not r.get("ok")]
    for r in failed:
        parts.append(
            f"* failed: {r['server']} round {r['round']}: {r.get('error') or r.get('reason')}"
            f" (delivered {r.get('delivered')} of {r.get('expected')})"
        )
    parts.append("")
    return "\n".join(parts)


def run(args: argparse.Namespace) -> int:
    if args.quick:
        args.f1_conns = min(args.f1_conns, 50)
    args.peers = [p.strip() for p in args.f1_peers.split(",") if p.strip()]
    args.push_ms = [ms.strip() for ms in args.f1_push_ms.split(",") if ms.strip()] or [""]
    args.f1_peers_dir = str(prepared_peers(args.f1_peers_dir))
    recorder = c.Recorder("f1")
    info = c.machine_info()
    try:
        info["postgres"] = c.run_async(c.postgres_version(c.ADMIN_URL))
    except Exception as exc:
        print(f"F1 needs PostgreSQL at {c.ADMIN_URL}: {exc!r}", file=sys.stderr)
        return 2
    info["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
    recorder.line(type="meta", bench="f1", argv=sys.argv[1:], **info)
    runs = []
    started = time.monotonic()
    for round_no in range(1, args.runs + 1):
        for push_ms in args.push_ms:
            busy = c.wait_quiet()
            rec = run_switchboard(args, recorder, round_no, push_ms)
            rec["busy_before"] = busy
            runs.append(rec)
            print(f"  round {round_no} {rec['server']}: {_brief(rec)}", file=sys.stderr)
        for peer in args.peers:
            c.wait_quiet()
            rec = run_peer(args, peer, recorder, round_no)
            runs.append(rec)
            print(f"  round {round_no} {peer}: {_brief(rec)}", file=sys.stderr)
    text = report(info, runs, args)
    text += f"\nNode {info['node'].strip()}. Total time {time.monotonic() - started:.0f} s.\n"
    recorder.write_markdown(text)
    print(text)
    print(f"raw: {recorder.jsonl}\ntable: {recorder.markdown}", file=sys.stderr)
    return 0


def _brief(rec: dict) -> str:
    keys = (
        "ok",
        "deliveries_per_s",
        "server_cpu_s_per_100k",
        "p50_ms",
        "p99_ms",
        "bytes_per_conn",
        "error",
    )
    return json.dumps({k: rec.get(k) for k in keys}, default=str)
