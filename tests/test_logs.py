"""One JSON object per log line, with the extra fields and a UTC time to the millisecond."""

from __future__ import annotations

import json
import logging

from server.core.logs import JsonFormatter


def record(created: float, **extra) -> logging.LogRecord:
    item = logging.makeLogRecord({"name": "switchboard.http", "levelno": 20,
                                  "levelname": "INFO", "msg": "request", **extra})  # fmt: skip
    item.created, item.msecs = created, (created - int(created)) * 1000
    return item


def test_a_line_has_the_time_the_level_the_message_and_the_extra_fields():
    formatter = JsonFormatter()
    first = json.loads(formatter.format(record(1_764_000_000.25, path="/x", status=200)))
    assert first == {
        "at": "2025-11-24T16:00:00.250Z",
        "level": "info",
        "logger": "switchboard.http",
        "message": "request",
        "path": "/x",
        "status": 200,
    }
    # The date is formatted once a second: the next second's line has its own.
    later = json.loads(formatter.format(record(1_764_000_001.5)))
    assert later["at"] == "2025-11-24T16:00:01.500Z"
