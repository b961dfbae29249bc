"""Configuration from the environment, each with an embedded default (api.md)."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    bus_url: str
    bus_prefix: str
    secret: str = field(repr=False)
    allowed_origins: tuple[str, ...] = ()
    public_url: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    push_interval_s: float = 0.02  # the shortest time between two live flushes
    presence_grace_s: float = 15.0  # an agent without connections goes offline after this
    presence_heartbeat_s: float = 5.0  # processes refresh their agents' connection rows

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> Settings:
        env = dict(os.environ if env is None else env)
        data_dir = Path(env.get("SWITCHBOARD_DATA_DIR") or "data").resolve()
        values = dict(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL")
            or f"sqlite+aiosqlite:///{data_dir}/switchboard.db",
            bus_url=env.get("REDIS_URL") or "memory://",
            bus_prefix=env.get("SWITCHBOARD_BUS_PREFIX", "switchboard:"),
            allowed_origins=tuple(
                origin.strip().rstrip("/")
                for origin in env.get("SWITCHBOARD_ALLOWED_ORIGINS", "").split(",")
                if origin.strip()
            ),
            public_url=(env.get("SWITCHBOARD_PUBLIC_URL") or "").rstrip("/") or None,
            max_body_bytes=int(env.get("SWITCHBOARD_MAX_BODY_BYTES", 4 * 1024 * 1024)),
            push_interval_s=_milliseconds(env, "SWITCHBOARD_PUSH_INTERVAL_MS", 20) / 1000,
            presence_grace_s=_milliseconds(env, "SWITCHBOARD_PRESENCE_GRACE_MS", 15_000) / 1000,
            presence_heartbeat_s=_milliseconds(
                env, "SWITCHBOARD_PRESENCE_HEARTBEAT_MS", 5_000, least=10
            )
            / 1000,
        )
        values.update(overrides)
        if "secret" not in values:
            values["secret"] = env.get("SWITCHBOARD_SECRET") or _stored_secret(values["data_dir"])
        return cls(**values)


def _milliseconds(env: dict[str, str], name: str, default: float, least: float = 0) -> float:
    text = env.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not least <= value <= 60_000:
        raise ValueError(
            f"{name}: must be a number of milliseconds from {least:g} to 60000, not {text!r}"
        )
    return value


def _stored_secret(data_dir: Path) -> str:
    """A signing secret generated once and kept in the data directory (never in the
    repository), so tokens survive restarts of the embedded setup."""
    path = data_dir / "secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value
