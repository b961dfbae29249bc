"""Click-to-initiate (`POST /api/v1/conversations/initiate` and the websocket's
`initiate`, docs/api.md): safe against double clicks and retries.

The request's `Idempotency-Key` (per user) is claimed in the database before anything
happens: the first request with a key creates the conversation and calls the
provider, and stores its answer; a request with the same key and body gets that
answer (waiting while the first is in flight), without a second provider call; the
same key with another body gets 409. So 100 concurrent requests with one key, on any
number of processes, make one conversation and one call.

A provider that fails or times out ends the conversation (`media.no_answer`, reason
`failed`) and the answer says why (502 `provider_failed`).
Only a failure to connect, where the request never reached the provider, is retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import secrets
from datetime import timedelta
from typing import Any

from channels.base import OutboundCall, OutboundMessage, ProviderError, rfc3339
from server.core.auth import Principal
from server.core.clock import Clock
from server.core.errors import Refused, invalid
from server.core.fields import MAX_NAME, Choice, Object, Phone, Text
from server.ingest.pipeline import Ingest
from server.providers import repository as crepo
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database

log = logging.getLogger("switchboard.initiate")

CHANNELS = ("call", "sms", "whatsapp")
TEXT_CHANNELS = ("sms", "whatsapp")
MAX_TEXT = 4096
MAX_KEY = 200
INITIATE_BODY = Object(
    channel=Choice(CHANNELS),
    contact=Phone(description="Whom to call or text, in E.164 form."),
    contacto_number=Phone(
        nullable=True,
        description="The contact-center number to call or text from (one of the provider's "
        "numbers); default: its first.",
    ),
    agent_id=Text(MAX_NAME, description="Default: the caller; only a supervisor names another."),
    text=Text(
        MAX_TEXT,
        nullable=True,
        description="The first message: required for sms and whatsapp, none for a call.",
    ),
    required=("channel", "contact"),
)
# Per user: this many initiate requests within the window, then 429.
RATE_LIMIT = 20
RATE_WINDOW_S = 60
PROVIDER_ATTEMPTS = 3  # only while the provider could not be reached at all
RETRY_BACKOFF_S = 0.2
IN_FLIGHT_WAIT_S = 30.0  # how long a retry waits for the first request's answer


def _fields(principal: Principal, body: dict) -> dict[str, Any]:
    fields = {"contacto_number": None, "text": None, **INITIATE_BODY.read(body)}
    channel = fields["channel"]
    agent_id = fields.setdefault("agent_id", principal.user)
    if agent_id != principal.user and not principal.has("supervisor", "admin"):
        raise Refused("forbidden", "only a supervisor may start a conversation for another agent")
    if channel in TEXT_CHANNELS and fields["text"] is None:
        raise invalid("text", f"the first message is required on {channel}")
    if channel not in TEXT_CHANNELS and fields["text"] is not None:
        raise invalid("text", "a call takes no text")
    return fields


def _body_hash(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class Initiator:
    """Click-to-initiate: a request in, a conversation and a provider call out, once
    per Idempotency-Key."""

    def __init__(self, db: Database, ingest: Ingest, configs, providers, clock: Clock):
        self.db = db
        self.ingest = ingest
        self.configs = configs
        self.providers = providers
        self.clock = clock

    async def initiate(self, principal: Principal, body: Any, key: str | None) -> tuple[int, dict]:
        """(HTTP status, answer body). Raises Refused for what changes nothing."""
        if not principal.has("agent", "supervisor", "admin"):
            raise Refused("forbidden", f"role {principal.role!r} may not start conversations")
        if not isinstance(body, dict):
            raise Refused("malformed", "the body must be an object")
        if key is not None and (not key.strip() or len(key) > MAX_KEY or "\x00" in key):
            raise Refused("malformed", f"Idempotency-Key must be 1-{MAX_KEY} characters")
        fields = _fields(principal, body)
        tenant, user = principal.tenant, principal.user
        key = key or f"auto-{secrets.token_hex(16)}"  # no key: no deduplication
        digest = _body_hash(fields)

        async with self.db.read() as conn:
            existing = await crepo.get_initiate(conn, tenant, user, key)
        if existing is not None:
            return await self._replay(tenant, user, key, digest)

        config = await self.configs.for_channel(tenant, fields["channel"])
        if config is None or config.name == "webchat":
            raise invalid("channel", f"the tenant has no provider for {fields['channel']}")
        self.providers.require_public_url(config.name)  # its callbacks: before anything starts
        number = fields["contacto_number"] or config.default_number()
        if fields["contacto_number"] and config.numbers and config.team_of(number) is None:
            raise invalid("contacto_number", f"is not one of {config.name}'s numbers")
        if number is None and config.name != "sandbox":
            raise invalid("contacto_number", f"{config.name} has no number to call from; add one")
        async with self.db.read() as conn:
            agent = await repo.get_row(conn, m.agents, tenant, "id", fields["agent_id"])
        agent_phone = (agent or {}).get("phone")
        if fields["channel"] == "call" and not agent_phone and config.name != "sandbox":
            raise invalid("agent_id", f"agent {fields['agent_id']!r} has no phone to ring")

        now = self.clock.now()
        conversation_id = f"out-{secrets.token_hex(12)}"
        async with self.db.write() as conn:
            count, oldest = await crepo.initiates_since(
                conn, tenant, user, now - timedelta(seconds=RATE_WINDOW_S)
            )
            if count >= RATE_LIMIT:
                wait = RATE_WINDOW_S - (now - oldest).total_seconds() if oldest else RATE_WINDOW_S
                raise Refused(
                    "rate_limited",
                    f"at most {RATE_LIMIT} conversations a minute per user; retry later",
                    retry_after_s=wait,
                )
            claimed = await crepo.claim_initiate(
                conn,
                {
                    "tenant_id": tenant,
                    "user_id": user,
                    "key": key,
                    "body_hash": digest,
                    "conversation_id": conversation_id,
                    "status_code": None,
                    "response": None,
                    "created_at": now,
                },
            )
        if not claimed:  # another request with this key got there first
            return await self._replay(tenant, user, key, digest)

        started = False
        try:
            status, answer, started = await self._start(
                tenant, conversation_id, fields, config, number, agent_phone
            )
        except BaseException:
            async with self.db.write() as conn:
                if started:
                    await crepo.finish_initiate(
                        conn, tenant, user, key, 502, _failed(conversation_id, "interrupted")
                    )
                else:  # nothing happened: let a retry try afresh
                    await crepo.forget_initiate(conn, tenant, user, key)
            raise
        async with self.db.write() as conn:
            await crepo.finish_initiate(conn, tenant, user, key, status, answer)
        return status, answer

    async def _start(self, tenant, conversation_id, fields, config, number, agent_phone):
        """Ingest `conversation.initiated`, then ask the provider. (status, answer, started)."""
        channel = fields["channel"]
        data = {"channel": channel, "contact": fields["contact"], "agent_id": fields["agent_id"]}
        if number:
            data["contacto_number"] = number
        if fields["text"] is not None:
            data["text"] = fields["text"]
        async with self.db.read() as conn:
            known = await repo.customer_of_contact(conn, tenant, fields["contact"])
        if known is not None and known["name"]:
            # The row's Customer Name is the known customer's, outgoing as incoming.
            data["customer"] = {
                key: known[key] for key in ("id", "name", "email", "phone") if known[key]
            }
        event_id = f"initiate:{conversation_id}"
        envelope = {
            "event_id": event_id,
            "type": "conversation.initiated",
            "conversation_id": conversation_id,
            "occurred_at": rfc3339(self.clock.now()),
            "data": data,
        }
        (outcome,) = await self.ingest.submit(tenant, [envelope])
        if outcome.outcome != "applied":
            raise Refused(outcome.code or "invalid_data", outcome.message or "not applied")
        adapter = self.providers.adapter(tenant, config)
        if channel == "call":
            async with self.db.write() as conn:
                # Mapped before the call is placed: its first callback may beat our answer.
                await crepo.remember_call(
                    conn,
                    {
                        "tenant_id": tenant,
                        "provider": config.name,
                        "call_id": conversation_id,
                        "conversation_id": conversation_id,
                        "provider_call_id": None,
                        "created_at": self.clock.now(),
                    },
                )
            request = OutboundCall(
                conversation_id, fields["contact"], number or "", agent_phone or ""
            )
            send = adapter.place_call
        else:
            # The first message's id in the transcript is the initiated event's id.
            request = OutboundMessage(
                channel, fields["contact"], number or "", fields["text"], event_id
            )
            send = adapter.send_message
        try:
            placed = await with_retries(send, request)
        except ProviderError as error:
            log.warning(
                "provider failed on initiate",
                extra={"tenant": tenant, "provider": config.name, "error": error.message},
            )
            failed = {
                "event_id": f"{event_id}:failed",
                "type": "media.no_answer",
                "conversation_id": conversation_id,
                "occurred_at": rfc3339(self.clock.now()),
                "data": {"reason": "failed"},
            }
            await self.ingest.submit(tenant, [failed])
            return (
                502,
                _failed(conversation_id, f"{config.name} could not place it: {error.message}"),
                True,
            )
        if channel == "call":
            async with self.db.write() as conn:
                await crepo.set_provider_call_id(
                    conn, tenant, config.name, conversation_id, placed.provider_id
                )
        async with self.db.read() as conn:
            row = await repo.get_conversation_row(conn, tenant, conversation_id)
        return 202, {"conversation_id": conversation_id, "status": row["status"]}, True

    async def _replay(self, tenant: str, user: str, key: str, digest: str) -> tuple[int, dict]:
        """The first request's answer, once it has one."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + IN_FLIGHT_WAIT_S
        delay = 0.01
        while True:
            async with self.db.read() as conn:
                row = await crepo.get_initiate(conn, tenant, user, key)
            if row is None:
                raise Refused(
                    "in_progress",
                    "a request with this Idempotency-Key failed; retry",
                    retry_after_s=1,
                )
            if row["body_hash"] != digest:
                raise Refused(
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with another body; use a new key",
                )
            if row["status_code"] is not None:
                return row["status_code"], row["response"]
            if loop.time() >= deadline:
                raise Refused(
                    "in_progress",
                    "the first request with this Idempotency-Key is still in progress; retry",
                    retry_after_s=1,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)


def _failed(conversation_id: str, message: str) -> dict:
    return {
        "error": {
            "code": "provider_failed",
            "message": message,
            "conversation_id": conversation_id,
        }
    }


async def with_retries(send, request):
    """Call the provider; again (with backoff) only if it could not be reached at all."""
    for attempt in range(1, PROVIDER_ATTEMPTS + 1):
        try:
            return await send(request)
        except ProviderError as error:
            if not error.safe_to_retry or attempt == PROVIDER_ATTEMPTS:
                raise
            await asyncio.sleep(RETRY_BACKOFF_S * 2 ** (attempt - 1))
    raise AssertionError("unreachable")
