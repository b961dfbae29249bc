"""Signed tokens (JWT, HS256) naming tenant, user, role and expiry, and role checks."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from server.core.clock import SYSTEM_CLOCK, Clock
from server.core.errors import Refused

ROLES = ("admin", "supervisor", "agent", "wallboard", "service")
ALGORITHM = "HS256"
DEFAULT_TTL_S = 12 * 3600
VERIFIED_CACHE_SIZE = 1024  # tokens remembered once verified, least recently used go first


class InvalidToken(Exception):
    pass


@dataclass(frozen=True)
class Principal:
    tenant: str
    user: str
    role: str
    expires_at: datetime

    def has(self, *roles: str) -> bool:
        return self.role in roles

    def require(self, *roles: str) -> None:
        """Refused (`forbidden`) unless the principal has one of `roles`."""
        if self.role not in roles:
            raise Refused(
                "forbidden",
                f"role {self.role!r} may not do this (needs {' or '.join(roles)})",
            )


def sees_conversation(principal: Principal, row) -> bool:
    """Agents see only their own conversations: theirs, or offered to them now."""
    if principal.role != "agent":
        return True
    return principal.user in (row["agent_id"], row["offer_agent_id"])


def mint_token(
    secret: str,
    tenant: str,
    role: str,
    user: str,
    ttl_s: int = DEFAULT_TTL_S,
    clock: Clock = SYSTEM_CLOCK,
) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    now = clock.now()
    claims = {
        "tenant": tenant,
        "sub": user,
        "role": role,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=ttl_s)).timestamp()),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# (secret, token) -> its principal. A token's claims cannot change, so one verified
# once needs only its expiry checked again; a bad token is never remembered.
_verified: OrderedDict[tuple[str, str], Principal] = OrderedDict()


def verify_token(secret: str, token: str, clock: Clock = SYSTEM_CLOCK) -> Principal:
    key = (secret, token)
    principal = _verified.get(key)
    if principal is None:
        principal = _decode(secret, token, clock)
        _verified[key] = principal
        if len(_verified) > VERIFIED_CACHE_SIZE:
            _verified.popitem(last=False)
    else:
        _verified.move_to_end(key)
        if principal.expires_at <= clock.now():
            raise InvalidToken("token expired")
    return principal


def _expiry(exp, clock: Clock) -> datetime:
    """A token's `exp` as a moment: a finite number of seconds a datetime can hold."""
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
        raise InvalidToken("invalid token: exp must be a number of seconds")
    try:
        return datetime.fromtimestamp(exp, clock.now().tzinfo)
    except (OverflowError, OSError, ValueError):
        raise InvalidToken("invalid token: exp is out of range") from None


def _decode(secret: str, token: str, clock: Clock) -> Principal:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "sub", "tenant", "role"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid token: {exc}") from None
    expires_at = _expiry(claims["exp"], clock)
    if expires_at <= clock.now():
        raise InvalidToken("token expired")
    tenant, user, role = claims["tenant"], claims["sub"], claims["role"]
    if not all(isinstance(value, str) and value for value in (tenant, user, role)):
        raise InvalidToken("invalid token: tenant, sub and role must be strings")
    if role not in ROLES:
        raise InvalidToken(f"invalid token: unknown role {role!r}")
    return Principal(tenant, user, role, expires_at)
