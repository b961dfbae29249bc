"""What the agent of a conversation does to it (reply, hang up, wrap-up), the same
over HTTP, websocket and the demo's simulated agents; and the bridge that connects a
held caller to the phone of the agent who accepted the call.

Each action first records its event through ingest (the one path every change
takes), then asks the provider. A refused transition is 409 `invalid_transition`
with the current row, and the provider is not called.

Not here: the reply timeout (`reply_timeout_s`, ending an unanswered outgoing message
as `customer_did_not_respond`) belongs with the durable timers of
server/routing/timers.py.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from channels.base import OutboundMessage, ProviderError, rfc3339
from server.core.auth import Principal, sees_conversation
from server.core.clock import Clock
from server.core.errors import Refused
from server.core.fields import Object, Text
from server.ingest.pipeline import Ingest
from server.providers import repository as crepo
from server.providers.initiate import with_retries
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database
from server.wire.rows import instant, wire_row
from state_machine import Status

log = logging.getLogger("switchboard.actions")

TEXT_CHANNELS = ("sms", "whatsapp", "chat")
ACTING_ROLES = ("agent", "supervisor", "admin")  # the roles that can be a conversation's agent
MAX_TEXT = 4096
MAX_DISPOSITION = 200
MAX_NOTE = 4096
MESSAGE_BODY = Object(text=Text(MAX_TEXT), required=("text",))
WRAPUP_BODY = Object(
    disposition=Text(MAX_DISPOSITION, description="The outcome, as the agent names it."),
    note=Text(MAX_NOTE, nullable=True),
    required=("disposition",),
)


class ConversationActions:
    """The actions of a conversation's agent, and the bridge on accept."""

    def __init__(
        self,
        db: Database,
        ingest: Ingest,
        configs,
        providers,
        zone_of,
        clock: Clock,
    ):
        self.db = db
        self.ingest = ingest
        self.configs = configs
        self.providers = providers
        self.zone_of = zone_of
        self.clock = clock

    async def _own_conversation(self, principal: Principal, conversation_id: str) -> dict:
        # Whoever is the conversation's agent may act on it, whatever its role (a
        # supervisor's initiate makes it the agent): docs/api.md "Limits and fairness".
        if not principal.has(*ACTING_ROLES):
            raise Refused("forbidden", "only the conversation's agent may do this")
        if not isinstance(conversation_id, str) or "\x00" in conversation_id:
            raise Refused("not_found", "no such conversation")
        async with self.db.read() as conn:
            row = await repo.get_conversation_row(conn, principal.tenant, conversation_id)
        if row is None or not sees_conversation(principal, row):
            raise Refused("not_found", f"no conversation {conversation_id[:200]!r}")
        if row["agent_id"] != principal.user:
            raise Refused("forbidden", "the conversation is not yours (accept it first)")
        return dict(row)

    async def _row_wire(self, tenant: str, conversation_id: str) -> dict:
        async with self.db.read() as conn:
            row = await repo.get_conversation_row(conn, tenant, conversation_id)
        return wire_row(row, await self.zone_of(tenant))

    async def _refused(self, tenant: str, conversation_id: str, message: str) -> Refused:
        return Refused(
            "invalid_transition",
            message,
            conversation=await self._row_wire(tenant, conversation_id),
        )

    async def send_reply(self, principal: Principal, conversation_id: Any, body: Any):
        """(status, answer): the agent's message, stored, then sent through the provider."""
        row = await self._own_conversation(principal, conversation_id)
        text = MESSAGE_BODY.read(body)["text"]
        tenant = principal.tenant
        channels = repo.decode_channels(row["channels"])
        channel = next((c for c in reversed(channels) if c in TEXT_CHANNELS), None)
        if channel is None or row["status"] == Status.CLOSED:
            raise await self._refused(
                tenant,
                conversation_id,
                f"a {row['channel']} conversation in {row['status']} takes no message",
            )
        config = None if channel == "chat" else await self.configs.for_channel(tenant, channel)
        if channel != "chat" and config is None:
            # the admin took the channel off every provider: nothing to record or send
            raise Refused(
                "no_provider",
                f"the tenant has no provider for {channel}: an admin sets one with "
                "PUT /api/v1/providers/{provider}",
            )
        message_id = f"m-{secrets.token_hex(10)}"
        (outcome,) = await self.ingest.submit(
            tenant,
            [
                {
                    "event_id": f"agent:{message_id}",
                    "type": "media.message",
                    "conversation_id": conversation_id,
                    "occurred_at": rfc3339(self.clock.now()),
                    "data": {"message_id": message_id, "sender": "agent", "text": text},
                }
            ],
        )
        if outcome.outcome != "applied":
            raise await self._refused(tenant, conversation_id, outcome.message or "refused")
        if channel == "chat":  # web chat: the visitor's socket carries it, no provider
            return 202, {
                "message_id": message_id,
                "conversation": await self._row_wire(tenant, conversation_id),
            }
        try:
            number = row["contacto_number"] or config.default_number() or ""
            adapter = self.providers.adapter(tenant, config)
            await with_retries(
                adapter.send_message,
                OutboundMessage(channel, row["contact"], number, text, message_id),
            )
        except ProviderError as error:
            await self.ingest.submit(
                tenant,
                [
                    {
                        "event_id": f"agent:{message_id}:failed",
                        "type": "media.message_status",
                        "conversation_id": conversation_id,
                        "occurred_at": rfc3339(self.clock.now()),
                        "data": {"message_id": message_id, "status": "failed"},
                    }
                ],
            )
            return 502, {
                "error": {
                    "code": "provider_failed",
                    "message": f"the message was not sent: {error.message}",
                    "message_id": message_id,
                    "conversation_id": conversation_id,
                }
            }
        return 202, {
            "message_id": message_id,
            "conversation": await self._row_wire(tenant, conversation_id),
        }

    async def hang_up(self, principal: Principal, conversation_id: Any):
        """(status, answer): the agent ends the call or chat; the provider drops the call."""
        row = await self._own_conversation(principal, conversation_id)
        tenant = principal.tenant
        (outcome,) = await self.ingest.submit(
            tenant,
            [
                {
                    "event_id": f"agent:hangup:{conversation_id}:{row['version']}",
                    "type": "media.hangup",
                    "conversation_id": conversation_id,
                    "occurred_at": rfc3339(self.clock.now()),
                    "data": {"source": "agent"},
                }
            ],
        )
        if outcome.outcome != "applied":
            raise await self._refused(
                tenant, conversation_id, outcome.message or f"nothing to hang up in {row['status']}"
            )
        answer: dict[str, Any] = {}
        if "call" in repo.decode_channels(row["channels"]):
            problem = await self._drop_calls(tenant, conversation_id)
            if problem:
                answer["warning"] = problem
        answer["conversation"] = await self._row_wire(tenant, conversation_id)
        return 200, answer

    async def _drop_calls(self, tenant: str, conversation_id: str) -> str | None:
        async with self.db.read() as conn:
            calls = await crepo.calls_of(conn, tenant, conversation_id)
        problems = []
        for call in calls:
            if not call["provider_call_id"]:
                continue
            config = await self.configs.config(tenant, call["provider"])
            if config is None:
                continue
            try:
                await self.providers.adapter(tenant, config).hangup(call["provider_call_id"])
            except ProviderError as error:
                log.warning(
                    "provider hangup failed", extra={"tenant": tenant, "error": error.message}
                )
                problems.append(f"{call['provider']} could not end the call: {error.message}")
        return "; ".join(problems) or None

    async def bridge_after_accept(self, principal: Principal, row: dict) -> None:
        """The accept path's hook (AgentActions.after_accept): an accepted call is bridged
        to the agent's phone. A provider that refuses is logged: the accept stands (the
        conversation is the agent's), as a hangup's provider failure does."""
        if row.get("channel") != "call":
            return
        try:
            await self.bridge_call(principal.tenant, row["id"], principal.user)
        except ProviderError as error:
            log.warning(
                "bridge on accept failed",
                extra={
                    "tenant": principal.tenant,
                    "conversation_id": row["id"],
                    "error": error.message,
                },
            )

    async def bridge_call(self, tenant: str, conversation_id: str, agent_id: str) -> None:
        """Connect a held inbound caller to the accepting agent's phone. For the accept
        path (agent.accepted of a call) to call once the acceptance is applied; raises
        ProviderError when the provider refuses."""
        async with self.db.read() as conn:
            calls = [
                call
                for call in await crepo.calls_of(conn, tenant, conversation_id)
                if call["provider_call_id"]
            ]
            if not calls:  # nothing to bridge (a call of no provider's): no more reads
                return
            agent = await repo.get_row(conn, m.agents, tenant, "id", agent_id)
            row = await repo.get_conversation_row(conn, tenant, conversation_id)
        for call in calls:
            config = await self.configs.config(tenant, call["provider"])
            if config is None:
                continue
            number = (row or {}).get("contacto_number") or config.default_number() or ""
            adapter = self.providers.adapter(tenant, config)
            await adapter.bridge(call["provider_call_id"], (agent or {}).get("phone") or "", number)

    async def submit_wrapup(self, principal: Principal, conversation_id: Any, body: dict) -> dict:
        """The conversation's row after the wrap-up, or 409 with the current row when its
        status takes none (a wrap-up that already closed it, or one still active)."""
        row = await self._own_conversation(principal, conversation_id)
        values = WRAPUP_BODY.read(body)
        data = {"disposition": values["disposition"].strip()}
        if values.get("note") is not None:
            data["note"] = values["note"]
        tenant = principal.tenant
        # Fixed by the version it answers: a double submit of one form is one event.
        event = {
            "event_id": f"agent:wrapup:{conversation_id}:{row['version']}",
            "type": "wrapup.submitted",
            "conversation_id": conversation_id,
            "occurred_at": instant(self.clock.now()),
            "data": data,
        }
        (outcome,) = await self.ingest.submit(tenant, [event])
        if outcome.outcome not in ("applied", "duplicate"):
            raise await self._refused(
                tenant, conversation_id, outcome.message or f"no wrap-up in {row['status']}"
            )
        return await self._row_wire(tenant, conversation_id)
