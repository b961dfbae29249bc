"""One JSON object per log line, with the extra fields and a UTC time to the millisecond."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys

from server.core.logs import JsonFormatter, RedactSecrets


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


def test_token_ticket_and_access_query_values_are_redacted_from_every_part_of_a_line():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("uvicorn.access.test-redaction")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        # uvicorn's access line: the path with its query is one of the arguments.
        logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET",
                    "/ws?token=eyJ.SECRET1.sig&x=1", "1.1", 101)  # fmt: skip
        logger.info("opening %s", "/ws?ticket=SECRET2", extra={"url": "/r?access=SECRET3"})
        try:
            raise ValueError("wss://h/ws?format=json;TOKEN=SECRET4 failed")
        except ValueError:
            logger.exception("failed at /ws?Ticket=SECRET5#frag")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    for secret in ("SECRET1", "SECRET2", "SECRET3", "SECRET4", "SECRET5"):
        assert secret not in text, text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["message"] == '127.0.0.1:5 - "GET /ws?token=[redacted]&x=1 HTTP/1.1" 101'
    assert lines[1]["url"] == "/r?access=[redacted]"
    assert lines[2]["message"] == "failed at /ws?Ticket=[redacted]#frag"
    assert "TOKEN=[redacted]" in lines[2]["exception"]


def test_the_servers_log_handler_redacts_whatever_logger_writes():
    code = (
        "import logging; from server.core import logs; logs.configure(); "
        "logging.getLogger('uvicorn.error').warning('x %s', '/ws?token=SECRET6'); "
        "logging.getLogger('anything').info('/ws?ticket=SECRET7')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "SECRET" not in done.stderr, done.stderr
    assert done.stderr.count("[redacted]") == 2, done.stderr
