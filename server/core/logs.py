"""Structured logs: one JSON object per line on standard error, with no credential in
any of them: a URL's `token`, `ticket` and `access` query values (a websocket's token
or ticket, a recording link's) are redacted from every line, uvicorn's included, by a
filter on the one handler every logger's records reach."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


# `token=`, `ticket=` or `access=` after `?`, `&` or `;`, in a URL or a query however
# it is quoted; the value runs to the next separator.
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:token|ticket|access)=)[^&;#\s\"'<>]*")
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """`text` with the value of every token, ticket and access query parameter in it
    replaced by [redacted]."""
    if "=" not in text:
        return text
    return _SECRET_QUERY.sub(r"\1" + REDACTED, text)


class RedactSecrets(logging.Filter):
    """Redacts credentials in query strings from a record: its message (with its
    arguments: uvicorn's access line passes the path with its query as one), its
    extra fields and its exception's text. Installed on the handler, it sees every
    record that is written, whichever logger made it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        for key, value in record.__dict__.items():
            if key not in _STANDARD and isinstance(value, str) and "=" in value:
                record.__dict__[key] = redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    _second: int = -1
    _stamp: str = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # one line per request: format the date once a second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry = {
            "at": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_text:  # RedactSecrets formatted it
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # None of these is in a line, and each costs every record a lookup (the logging
    # HOWTO's "Optimization"): the caller's frame, thread, process and its name.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # Request lines come from our own middleware, with the route and timing.
    logging.getLogger("uvicorn.access").disabled = True
