"""Prometheus metrics, served at /metrics."""

import gc
import logging
import time

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger("switchboard.gc")

EVENTS = Counter("switchboard_events_total", "Events by outcome", ["outcome"])
REQUESTS = Histogram(
    "switchboard_http_request_seconds",
    "HTTP request latency by route and status",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)

LIVE_WINDOW_BYTES = Gauge(
    "switchboard_live_window_bytes",
    "Bytes of live windows' rows, as accounted against SWITCHBOARD_WINDOW_MEMORY_MB",
)
LIVE_SUBSCRIPTIONS = Gauge("switchboard_live_subscriptions", "Live view subscriptions held")
LIVE_WINDOWS = Gauge("switchboard_live_windows", "Live windows held (watched or idle)")
LIVE_EVICTIONS = Counter(
    "switchboard_live_window_evictions_total", "Idle windows evicted to make room in the budget"
)
LIVE_REFUSALS = Counter("switchboard_live_over_capacity_total", "Subscribes refused over_capacity")
WS_RATE_LIMITED = Counter(
    "switchboard_ws_rate_limited_total", "Websocket frames refused rate_limited, by path", ["path"]
)
WEBCHAT_LIMITED = Counter(
    "switchboard_webchat_limited_total",
    "Web chat handshakes (429) and hellos (close 1013) refused, by limit",
    ["limit"],
)

GC_PAUSES = Histogram(
    "switchboard_gc_pause_seconds",
    "Garbage collector pauses by generation: every task of the process waits them out",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
_gc_started = [0.0]


def _on_gc(phase: str, info: dict) -> None:
    if phase == "start":
        _gc_started[0] = time.perf_counter()
        return
    pause = time.perf_counter() - _gc_started[0]
    GC_PAUSES.labels(str(info["generation"])).observe(pause)
    if pause > 0.05:
        log.warning(
            "garbage collector pause",
            extra={
                "generation": info["generation"],
                "ms": round(pause * 1000, 1),
                "collected": info["collected"],
            },
        )


def watch_gc() -> None:
    """Time the collector's pauses (once per process)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


def settle_gc() -> None:
    """For a server process, once it is built: what exists now (modules, tables,
    compiled statements) lives as long as the process, so the collector stops walking
    it (gc.freeze), and it runs a young collection every 10,000 allocations instead of
    700. Measured under R1 (bench/RESULTS.md): full collections had paused every task
    for 60-210 ms every few seconds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
