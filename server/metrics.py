"""Prometheus metrics, served at /metrics."""

from prometheus_client import Counter, Histogram

EVENTS = Counter("switchboard_events_total", "Events by outcome", ["outcome"])
REQUESTS = Histogram(
    "switchboard_http_request_seconds",
    "HTTP request latency by route and status",
    ["method", "route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
