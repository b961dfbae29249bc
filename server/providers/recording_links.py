"""Recording links: a short-lived token that lets an <audio src> (which cannot send an
Authorization header) stream one recording with HTTP Range, and nothing else.

A link token is a JWT (HS256) naming the tenant, conversation and recording, the user
and role that asked for it, and an expiry of a few minutes (never later than the
asker's own token). It is kept apart from the bearer tokens of auth.py twice over: it
is signed with a key derived from the server's secret for this purpose alone, and it
carries an `aud` claim, so neither kind of token verifies as the other.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from urllib.parse import quote

import jwt

from server.core.auth import ALGORITHM, ROLES, Principal
from server.core.clock import SYSTEM_CLOCK, Clock
from server.core.errors import Refused

LINK_TTL_S = 300  # long enough to start playing; a later seek mints a fresh one
AUDIENCE = "switchboard:recording"
QUERY_PARAMETER = "access"
MAX_TOKEN_CHARS = 2048  # a link token is ~400; anything longer is not one
_KEY_PURPOSE = b"switchboard recording link v1"
_CLAIMS = ("aud", "exp", "sub", "role", "tenant", "conversation", "recording")


def link_key(secret: str) -> bytes:
    """The signing key of links, derived from the secret: a bearer token (signed with
    the secret itself) never verifies as a link, nor a link as a bearer token."""
    return hmac.new(secret.encode(), _KEY_PURPOSE, hashlib.sha256).digest()


def recording_path(conversation_id: str, recording_id: str) -> str:
    return (
        f"/api/v1/conversations/{quote(conversation_id, safe='')}"
        f"/recordings/{quote(recording_id, safe='')}"
    )


def mint_link(
    secret: str,
    principal: Principal,
    conversation_id: str,
    recording_id: str,
    clock: Clock = SYSTEM_CLOCK,
) -> tuple[str, datetime]:
    """(the link: a path on this server with the token as `?access=`, when it expires)."""
    now = clock.now()
    expires_at = min(now + timedelta(seconds=LINK_TTL_S), principal.expires_at)
    claims = {
        "aud": AUDIENCE,
        "tenant": principal.tenant,
        "sub": principal.user,
        "role": principal.role,
        "conversation": conversation_id,
        "recording": recording_id,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    token = jwt.encode(claims, link_key(secret), algorithm=ALGORITHM)
    url = f"{recording_path(conversation_id, recording_id)}?{QUERY_PARAMETER}={token}"
    return url, datetime.fromtimestamp(claims["exp"], now.tzinfo)


def principal_of_link(
    secret: str,
    token: str,
    conversation_id: str,
    recording_id: str,
    clock: Clock = SYSTEM_CLOCK,
) -> Principal:
    """Who asked for the link, when `token` is a valid, unexpired link to exactly this
    recording: 401 for a token that is not one (bad, tampered, expired), 403 for a
    link to another recording."""
    if len(token) > MAX_TOKEN_CHARS:
        raise _refused("invalid recording link: too long")
    try:
        claims = jwt.decode(
            token,
            link_key(secret),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            # Time is the server's clock (below), not PyJWT's.
            options={
                "require": list(_CLAIMS),
                "verify_exp": False,
                "verify_iat": False,
                "strict_aud": True,
            },
        )
    except jwt.PyJWTError as exc:
        raise _refused(f"invalid recording link: {exc}") from None
    values = [claims[name] for name in ("tenant", "sub", "role", "conversation", "recording")]
    if not all(isinstance(value, str) and value for value in values):
        raise _refused("invalid recording link: its claims must be strings")
    if claims["role"] not in ROLES or type(claims["exp"]) is not int:
        raise _refused("invalid recording link")
    now = clock.now()
    try:
        expires_at = datetime.fromtimestamp(claims["exp"], now.tzinfo)
    except (OverflowError, ValueError, OSError):
        raise _refused("invalid recording link: exp is out of range") from None
    if expires_at <= now:
        raise _refused("the recording link has expired; ask for a new one")
    if (claims["conversation"], claims["recording"]) != (conversation_id, recording_id):
        raise Refused("forbidden", "this link is for another recording")
    return Principal(claims["tenant"], claims["sub"], claims["role"], expires_at)


def _refused(message: str) -> Refused:
    return Refused(
        "unauthorized", message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )
