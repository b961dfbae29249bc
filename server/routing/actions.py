"""What an agent or supervisor does to an offer or a conversation (accept, reject,
transfer), the same over HTTP and websocket. Each becomes an event through ingest, so
the state machine decides and ingest's per-conversation lock orders racing actions.

Exactly one outcome per offer: the accept's `event_id` is fixed by the offer, so two
accepts racing for one offer are one event (the second is a `duplicate`) and its
sender hears `taken`; an accept that finds the offer past its `expires_at` first fires
the expiry itself (the same event the timer would send) and hears `expired`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from server.core.auth import Principal
from server.core.errors import Refused, invalid
from server.core.fields import MAX_NAME, Object, Text
from server.ingest.pipeline import Ingest
from server.routing import repository as rr
from server.routing.router import offer_id_for
from server.routing.timers import offer_expiry_event
from server.storage import models as m
from server.storage import repository as repo
from server.wire.rows import instant, wire_row

ACTION_ROLES = ("agent", "supervisor", "admin")
TRANSFER_BODY = Object(
    team=Text(MAX_NAME, nullable=True),
    agent_id=Text(MAX_NAME, nullable=True),
    description="Exactly one of team (queued there again) or agent_id (offered).",
)


class AgentActions:
    def __init__(self, db, ingest: Ingest, clock, zone_of, after_accept=None):
        self.db = db
        self.ingest = ingest
        self.clock = clock
        self.zone_of = zone_of
        # (principal, row) after an applied accept: the provider glue connects
        # a held caller to the agent (ConversationActions.bridge_after_accept).
        self.after_accept = after_accept

    async def _row(self, tenant: str, conversation_id: str) -> dict | None:
        async with self.db.read() as conn:
            return await repo.get_conversation_row(conn, tenant, conversation_id)

    async def _wire(self, tenant: str, row: dict) -> dict:
        return wire_row(row, await self.zone_of(tenant))

    async def _refuse(self, tenant: str, code: str, message: str, conversation_id: str):
        row = await self._row(tenant, conversation_id)
        extra = {"conversation": await self._wire(tenant, row)} if row else {}
        raise Refused(code, message, **extra)

    async def _offer(self, principal: Principal, offer_id: Any) -> dict:
        if principal.role != "agent":
            raise Refused("forbidden", "only the offered agent answers an offer")
        if not isinstance(offer_id, str) or not offer_id or len(offer_id) > 200:
            raise Refused("invalid_field", "offer_id: must be a string of 1-200 characters")
        if "\x00" in offer_id:  # no offer id has one; PostgreSQL cannot even compare it
            raise Refused("not_found", f"no offer {offer_id!r}")
        async with self.db.read() as conn:
            offer = await rr.get_offer(conn, principal.tenant, offer_id)
        if offer is None or offer["agent_id"] != principal.user:
            raise Refused("not_found", f"no offer {offer_id!r} for you")
        return offer

    async def _why_over(self, tenant: str, offer: dict) -> str:
        async with self.db.read() as conn:
            end = await rr.offer_end(conn, tenant, offer["conversation_id"], offer["offer_id"])
        return "expired" if end == "expired" else "taken"

    async def accept(self, principal: Principal, offer_id: Any) -> dict:
        offer = await self._offer(principal, offer_id)
        tenant, cid = principal.tenant, offer["conversation_id"]
        now = self.clock.now()
        if now >= offer["expires_at"]:
            await self.ingest.submit(
                tenant, [offer_expiry_event(cid, offer_id, principal.user, offer["expires_at"])]
            )
            code = await self._why_over(tenant, offer)
            await self._refuse(tenant, code, f"offer {offer_id!r} is {code}", cid)
        event = {
            "event_id": f"accept:{offer_id}",
            "type": "agent.accepted",
            "conversation_id": cid,
            "occurred_at": instant(now),
            "data": {"agent_id": principal.user, "offer_id": offer_id},
        }
        [outcome] = await self.ingest.submit(tenant, [event])
        if outcome.outcome != "applied":
            code = await self._why_over(tenant, offer)
            await self._refuse(tenant, code, f"offer {offer_id!r} is {code}", cid)
        row = await self._wire(tenant, await self._row(tenant, cid))
        if self.after_accept is not None:
            await self.after_accept(principal, row)
        return row

    async def reject(self, principal: Principal, offer_id: Any) -> dict:
        offer = await self._offer(principal, offer_id)
        tenant, cid = principal.tenant, offer["conversation_id"]
        event = {
            "event_id": f"reject:{offer_id}",
            "type": "routing.offer_declined",
            "conversation_id": cid,
            "occurred_at": instant(self.clock.now()),
            "data": {"agent_id": principal.user, "offer_id": offer_id, "reason": "rejected"},
        }
        [outcome] = await self.ingest.submit(tenant, [event])
        if outcome.outcome != "applied":
            code = await self._why_over(tenant, offer)
            await self._refuse(tenant, code, f"offer {offer_id!r} is {code}", cid)
        return await self._wire(tenant, await self._row(tenant, cid))

    async def transfer(self, principal: Principal, conversation_id: Any, body: dict) -> dict:
        if principal.role not in ACTION_ROLES:
            raise Refused("forbidden", f"role {principal.role!r} may not transfer")
        if not isinstance(conversation_id, str) or not conversation_id or "\x00" in conversation_id:
            raise Refused("invalid_field", "conversation_id: must be a non-empty string")
        values = TRANSFER_BODY.read(body)
        team, agent_id = values.get("team"), values.get("agent_id")
        if (team is None) == (agent_id is None):
            raise invalid("team", "give exactly one of team or agent_id")
        tenant = principal.tenant
        row = await self._row(tenant, conversation_id)
        if row is None or (
            principal.role == "agent"
            and principal.user not in (row["agent_id"], row["offer_agent_id"])
        ):
            raise Refused("not_found", f"no conversation {conversation_id!r}")
        now = self.clock.now()
        async with self.db.read() as conn:
            teams = await rr.team_settings(conn, tenant)
            if team is not None:
                if team not in teams:
                    raise invalid("team", f"no team {team!r}")
                data: dict[str, Any] = {"team": team}
            else:
                agent = await repo.get_row(conn, m.agents, tenant, "id", agent_id)
                if agent is None:
                    raise invalid("agent_id", f"no agent {agent_id!r}")
                if agent["presence"] == "offline":
                    raise invalid("agent_id", f"{agent_id!r} is offline")
                setting = teams.get(row["team"]) or rr.TEAM_DEFAULTS
                expires = now + timedelta(seconds=setting["offer_timeout_s"])
                data = {
                    "agent_id": agent_id,
                    "offer_id": offer_id_for(tenant, conversation_id, row["version"]),
                    "expires_at": instant(expires),
                }
        event = {
            "event_id": f"transfer:{offer_id_for(tenant, conversation_id, row['version'])}",
            "type": "routing.transferred",
            "conversation_id": conversation_id,
            "occurred_at": instant(now),
            "data": data,
        }
        [outcome] = await self.ingest.submit(tenant, [event])
        if outcome.outcome == "applied":
            return await self._wire(tenant, await self._row(tenant, conversation_id))
        code = "invalid_transition" if outcome.outcome == "rejected" else "taken"
        message = outcome.message or f"the transfer was {outcome.outcome}"
        await self._refuse(tenant, code, message, conversation_id)
        raise AssertionError("unreachable")
