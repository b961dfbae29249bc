"""Configuration from the environment, each variable with an embedded default, so that
a fresh machine needs none. ENVIRONMENT lists them with their defaults and what they
are for (docs/api.md is written from it)."""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from server.core.files import private_dir


@dataclass(frozen=True)
class Variable:
    name: str
    default: str  # as the server reads it when the variable is unset ("": none)
    about: str


ENVIRONMENT = {
    variable.name: variable
    for variable in (
        Variable(
            "DATABASE_URL",
            "sqlite+aiosqlite:///{data_dir}/switchboard.db",
            "The database: a SQLite file in the data directory by default; "
            "`postgresql+asyncpg://...` for PostgreSQL.",
        ),
        Variable(
            "REDIS_URL",
            "memory://",
            "The bus that tells every process of committed changes: in-process by default; "
            "`redis://...` to fan out across processes and machines.",
        ),
        Variable(
            "SWITCHBOARD_SECRET",
            "",
            "Signs tokens and seals provider credentials at rest. Unset: one is generated "
            "once and kept in the data directory (changing it means putting the providers' "
            "credentials again).",
        ),
        Variable(
            "SWITCHBOARD_DATA_DIR",
            "data",
            "Where the SQLite file, the secret and recordings live (made 0700, files 0600).",
        ),
        Variable(
            "SWITCHBOARD_ALLOWED_ORIGINS",
            "",
            "Comma-separated origins, besides the server's own, whose pages may open /ws.",
        ),
        Variable(
            "SWITCHBOARD_PUBLIC_URL",
            "",
            "The address providers call back: webhook URLs are built from it (never from a "
            "request's Host), and signatures that cover the URL are checked against it. "
            "Required before Twilio, Plivo or WhatsApp Cloud can be configured.",
        ),
        Variable(
            "SWITCHBOARD_BUS_PREFIX",
            "switchboard:",
            "The prefix of every Redis channel and key, so that deployments or tests can "
            "share one Redis.",
        ),
        Variable(
            "SWITCHBOARD_MAX_BODY_BYTES",
            str(4 * 1024 * 1024),
            "The largest request body taken (413 beyond).",
        ),
        Variable(
            "SWITCHBOARD_PUSH_INTERVAL_MS",
            "20",
            "The shortest time between two deltas of a live view (docs/websocket-server.md).",
        ),
        Variable(
            "SWITCHBOARD_PRESENCE_GRACE_MS",
            "15000",
            "An agent without connections goes offline after this (docs/routing.md).",
        ),
        Variable(
            "SWITCHBOARD_PRESENCE_HEARTBEAT_MS",
            "5000",
            "How often each process refreshes its agents' connections (at least 10).",
        ),
        Variable(
            "SWITCHBOARD_WS_MAX_SUBSCRIPTIONS",
            "1000",
            "Subscriptions one /ws connection may hold (`too_many_subscriptions` beyond; "
            "docs/security.md).",
        ),
        Variable(
            "SWITCHBOARD_WS_FRAME_BURST",
            "1000",
            "The token bucket of one /ws connection's inbound frames: what it may ask at "
            "once, in cost units (a ping or a count-only subscribe costs 1, a subscribe or "
            "fetch 1 + limit/50; `rate_limited` beyond; docs/security.md).",
        ),
        Variable(
            "SWITCHBOARD_WS_FRAME_RATE",
            "200",
            "The cost units per second that refill that bucket.",
        ),
        Variable(
            "SWITCHBOARD_WS_USER_ROWS_BURST",
            "50000",
            "Rows one user may ask for at once (subscribe and fetch `limit`s) over all its "
            "/ws connections in a process, so that reconnecting does not refill the "
            "connection's bucket (`rate_limited` beyond; docs/security.md).",
        ),
        Variable(
            "SWITCHBOARD_WS_USER_ROWS_RATE",
            "10000",
            "Rows a second that refill a user's bucket (SWITCHBOARD_WS_USER_ROWS_BURST).",
        ),
        Variable(
            "SWITCHBOARD_WINDOW_MEMORY_MB",
            "256",
            "The process-wide budget of live windows' rows; beyond it idle windows are "
            "evicted, then a subscribe gets `over_capacity` (docs/security.md).",
        ),
        Variable(
            "SWITCHBOARD_TRUSTED_PROXIES",
            "",
            "Comma-separated addresses or CIDRs of proxies whose X-Forwarded-For names the "
            "client (for /webchat's limits per address); none by default.",
        ),
        Variable(
            "SWITCHBOARD_WEBCHAT_HANDSHAKES_PER_MINUTE",
            "120",
            "/webchat handshakes per client address per minute (429 beyond).",
        ),
        Variable(
            "SWITCHBOARD_WEBCHAT_TENANT_HANDSHAKES_PER_MINUTE",
            "6000",
            "/webchat handshakes per tenant per minute, over every address (429 beyond).",
        ),
        Variable(
            "SWITCHBOARD_WEBCHAT_CONVERSATIONS_PER_HOUR",
            "30",
            "New web chat visitors (a hello with a visitor id not seen lately) per client "
            "address per hour (close 1013 beyond).",
        ),
        Variable(
            "SWITCHBOARD_WEBCHAT_TENANT_CONVERSATIONS_PER_HOUR",
            "3000",
            "New web chat visitors per tenant per hour, over every address (close 1013 beyond).",
        ),
    )
}


def default(name: str) -> str:
    return ENVIRONMENT[name].default


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    bus_url: str
    bus_prefix: str
    secret: str = field(repr=False)
    allowed_origins: tuple[str, ...] = ()
    public_url: str | None = None
    max_body_bytes: int = int(default("SWITCHBOARD_MAX_BODY_BYTES"))
    # the shortest time between two live flushes
    push_interval_s: float = float(default("SWITCHBOARD_PUSH_INTERVAL_MS")) / 1000
    # an agent without connections goes offline after this
    presence_grace_s: float = float(default("SWITCHBOARD_PRESENCE_GRACE_MS")) / 1000
    # processes refresh their agents' connection rows
    presence_heartbeat_s: float = float(default("SWITCHBOARD_PRESENCE_HEARTBEAT_MS")) / 1000
    # limits and fairness (docs/security.md)
    ws_max_subscriptions: int = int(default("SWITCHBOARD_WS_MAX_SUBSCRIPTIONS"))
    ws_frame_burst: float = float(default("SWITCHBOARD_WS_FRAME_BURST"))
    ws_frame_rate: float = float(default("SWITCHBOARD_WS_FRAME_RATE"))
    ws_user_rows_burst: float = float(default("SWITCHBOARD_WS_USER_ROWS_BURST"))
    ws_user_rows_rate: float = float(default("SWITCHBOARD_WS_USER_ROWS_RATE"))
    window_memory_bytes: int = int(default("SWITCHBOARD_WINDOW_MEMORY_MB")) << 20
    trusted_proxies: tuple[str, ...] = ()
    webchat_handshakes_per_minute: int = int(default("SWITCHBOARD_WEBCHAT_HANDSHAKES_PER_MINUTE"))
    webchat_tenant_handshakes_per_minute: int = int(
        default("SWITCHBOARD_WEBCHAT_TENANT_HANDSHAKES_PER_MINUTE")
    )
    webchat_conversations_per_hour: int = int(default("SWITCHBOARD_WEBCHAT_CONVERSATIONS_PER_HOUR"))
    webchat_tenant_conversations_per_hour: int = int(
        default("SWITCHBOARD_WEBCHAT_TENANT_CONVERSATIONS_PER_HOUR")
    )

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("SWITCHBOARD_DATA_DIR") or default("SWITCHBOARD_DATA_DIR"))
        data_dir = data_dir.resolve()
        values = dict(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL")
            or default("DATABASE_URL").format(data_dir=data_dir),
            bus_url=env.get("REDIS_URL") or default("REDIS_URL"),
            bus_prefix=env.get("SWITCHBOARD_BUS_PREFIX", default("SWITCHBOARD_BUS_PREFIX")),
            allowed_origins=tuple(
                origin.strip().rstrip("/")
                for origin in env.get("SWITCHBOARD_ALLOWED_ORIGINS", "").split(",")
                if origin.strip()
            ),
            public_url=(env.get("SWITCHBOARD_PUBLIC_URL") or "").rstrip("/") or None,
            max_body_bytes=int(
                env.get("SWITCHBOARD_MAX_BODY_BYTES", default("SWITCHBOARD_MAX_BODY_BYTES"))
            ),
            push_interval_s=_milliseconds(env, "SWITCHBOARD_PUSH_INTERVAL_MS") / 1000,
            presence_grace_s=_milliseconds(env, "SWITCHBOARD_PRESENCE_GRACE_MS") / 1000,
            presence_heartbeat_s=_milliseconds(env, "SWITCHBOARD_PRESENCE_HEARTBEAT_MS", least=10)
            / 1000,
            ws_max_subscriptions=int(_number(env, "SWITCHBOARD_WS_MAX_SUBSCRIPTIONS", 1)),
            ws_frame_burst=_number(env, "SWITCHBOARD_WS_FRAME_BURST", 25),
            ws_frame_rate=_number(env, "SWITCHBOARD_WS_FRAME_RATE", 1),
            # at least one snapshot of the largest window (wire/protocol.py MAX_LIMIT)
            ws_user_rows_burst=_number(env, "SWITCHBOARD_WS_USER_ROWS_BURST", 1000),
            ws_user_rows_rate=_number(env, "SWITCHBOARD_WS_USER_ROWS_RATE", 1),
            window_memory_bytes=int(_number(env, "SWITCHBOARD_WINDOW_MEMORY_MB", 1)) << 20,
            trusted_proxies=_networks(env.get("SWITCHBOARD_TRUSTED_PROXIES", "")),
            webchat_handshakes_per_minute=int(
                _number(env, "SWITCHBOARD_WEBCHAT_HANDSHAKES_PER_MINUTE", 1)
            ),
            webchat_tenant_handshakes_per_minute=int(
                _number(env, "SWITCHBOARD_WEBCHAT_TENANT_HANDSHAKES_PER_MINUTE", 1)
            ),
            webchat_conversations_per_hour=int(
                _number(env, "SWITCHBOARD_WEBCHAT_CONVERSATIONS_PER_HOUR", 1)
            ),
            webchat_tenant_conversations_per_hour=int(
                _number(env, "SWITCHBOARD_WEBCHAT_TENANT_CONVERSATIONS_PER_HOUR", 1)
            ),
        )
        values.update(overrides)
        if "secret" not in values:
            values["secret"] = env.get("SWITCHBOARD_SECRET") or _stored_secret(values["data_dir"])
        return cls(**values)


def _milliseconds(env: dict[str, str], name: str, least: float = 0) -> float:
    text = env.get(name)
    if text is None or not text.strip():
        return float(default(name))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not least <= value <= 60_000:
        raise ValueError(
            f"{name}: must be a number of milliseconds from {least:g} to 60000, not {text!r}"
        )
    return value


def _number(env: dict[str, str], name: str, least: float) -> float:
    """A positive number setting: its default when unset, else at least `least`."""
    text = env.get(name)
    if text is None or not text.strip():
        return float(default(name))
    try:
        value = float(text)
    except ValueError:
        value = least - 1
    if not least <= value < 1e12:
        raise ValueError(f"{name}: must be a number, at least {least:g}, not {text!r}")
    return value


def _networks(text: str) -> tuple[str, ...]:
    """SWITCHBOARD_TRUSTED_PROXIES: addresses or CIDRs, each checked."""
    entries = tuple(entry.strip() for entry in text.split(",") if entry.strip())
    for entry in entries:
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise ValueError(
                f"SWITCHBOARD_TRUSTED_PROXIES: {entry!r} is not an address or a CIDR"
            ) from None
    return entries


def _stored_secret(data_dir: Path) -> str:
    """A signing secret generated once and kept in the data directory (never in the
    repository), so tokens survive restarts of the embedded setup."""
    path = data_dir / "secret"
    if path.exists():
        return path.read_text().strip()
    private_dir(data_dir)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value
