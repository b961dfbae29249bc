"""Websocket tickets: what a page opens `/ws` with instead of its token, so that no
token is ever in a URL (and so in no log line).

`POST /api/v1/ws-tickets` (any role) issues one for the caller's principal; `/ws?ticket=K`
redeems it. A ticket is good once and for TICKET_TTL_S seconds, and never past the
token it was issued for. Tickets are rows of the database (`ws_tickets`), not state of
one process, so a page's socket may land on another process than its POST (several
processes behind a load balancer); only a SHA-256 of each is stored, so the table
holds nothing that opens a socket. Redeeming deletes the row and reads it back in one
statement (DELETE ... RETURNING): of two sockets with one ticket, one gets it.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import delete, insert

from server.core.auth import InvalidToken, Principal
from server.core.clock import Clock
from server.storage import models as m
from server.storage.db import Database

TICKET_TTL_S = 30
TICKET_BYTES = 32  # 256 random bits: the hash needs no salt, nor slowness
MAX_TICKET_LENGTH = 100  # what a query may offer as one: longer is not ours


def _hash(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


class WsTickets:
    def __init__(self, db: Database, clock: Clock):
        self.db = db
        self.clock = clock

    async def issue(self, principal: Principal) -> str:
        """A new ticket for `principal` (the caller's token's), good for TICKET_TTL_S."""
        ticket = secrets.token_urlsafe(TICKET_BYTES)
        now = self.clock.now()
        t = m.ws_tickets
        async with self.db.write() as conn:
            await conn.execute(delete(t).where(t.c.expires_at <= now))  # the unused ones
            await conn.execute(
                insert(t).values(
                    ticket_hash=_hash(ticket),
                    tenant_id=principal.tenant,
                    user_id=principal.user,
                    role=principal.role,
                    token_expires_at=principal.expires_at,
                    expires_at=now + timedelta(seconds=TICKET_TTL_S),
                )
            )
        return ticket

    async def redeem(self, ticket: str) -> Principal:
        """The principal a ticket was issued for; the ticket is used up. InvalidToken
        when it is unknown, used, expired, or its token has expired."""
        if not ticket or len(ticket) > MAX_TICKET_LENGTH:
            raise InvalidToken("invalid ticket")
        t = m.ws_tickets
        async with self.db.write() as conn:
            result = await conn.execute(
                delete(t)
                .where(t.c.ticket_hash == _hash(ticket))
                .returning(
                    t.c.tenant_id, t.c.user_id, t.c.role, t.c.token_expires_at, t.c.expires_at
                )
            )
            row = result.first()
        now = self.clock.now()
        if row is None:
            raise InvalidToken("invalid ticket: unknown or already used")
        if row.expires_at <= now:
            raise InvalidToken(f"ticket expired (a ticket is good for {TICKET_TTL_S} s)")
        if row.token_expires_at <= now:
            raise InvalidToken("token expired")
        return Principal(row.tenant_id, row.user_id, row.role, row.token_expires_at)
