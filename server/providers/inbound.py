"""What a provider reports, into ingest: one `Inbound` (channels/base.py) at a time,
from a webhook or from the sandbox inside the server.

The reference names the conversation: a call by its id (the provider's for an inbound
call, ours for one we placed), mapped in `channel_calls`; a message by its contact and
channel, to that contact's open conversation on the channel. With none, the adapter's
`opening` starts one, routed to the team of the number it came in on; its id is
derived from the opening's event id, so a provider's retry lands on the same
conversation and is a `duplicate`. A message's new conversation is claimed first in
`inbound_openings` (one row per tenant, channel and contact), so first messages of one
contact arriving at once, on any process, agree on one. With the tenant's
`merge_channels`, a contact with an open conversation on another channel joins it
(`media.channel_added`), and the claim is one per contact whatever the channel, calls
included, so first contacts on different channels at once agree on one conversation
that carries both channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from channels.base import ChannelEvent, Inbound, Provider
from server.core.clock import Clock
from server.ingest.pipeline import Ingest, Outcome
from server.providers import repository as crepo
from server.providers.recordings import FileRecordingStore
from server.storage import models as m
from server.storage import repository as repo
from server.storage.db import Database

log = logging.getLogger("switchboard.inbound")


def conversation_id_for(opening_event_id: str) -> str:
    """A new conversation's id, stable for the provider's fact that opened it."""
    return "c-" + hashlib.sha256(opening_event_id.encode()).hexdigest()[:24]


class KeyedLocks:
    """One asyncio lock per key while anyone holds or waits for it (so the map stays
    as small as the work in flight): webhooks about one reference, in one process,
    resolve their conversation one at a time."""

    def __init__(self):
        self._locks: dict[tuple, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: tuple) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class InboundDelivery:
    """Delivers what providers report into ingest (webhooks, the sandbox, web chat)."""

    def __init__(
        self,
        db: Database,
        ingest: Ingest,
        recordings: FileRecordingStore,
        clock: Clock,
        team_of_number,
    ):
        self.db = db
        self.ingest = ingest
        self.recordings = recordings
        self.clock = clock
        # (tenant, contact-center number) -> the team it routes to (ProviderConfigs).
        self.team_of_number = team_of_number
        self.locks = KeyedLocks()

    async def deliver(
        self, tenant: str, provider: str, adapter: Provider, item: Inbound
    ) -> list[Outcome]:
        """Map `item` to its conversation, store its recording, ingest its events."""
        ref = item.reference
        key = (tenant, provider, ref.kind, ref.call_id or "", ref.contact or "", ref.channel)
        async with self.locks.hold(key):
            conversation_id, events, new_call = await self._resolve(tenant, provider, item)
            if conversation_id is None:
                log.info(
                    "provider callback about nothing we know",
                    extra={"tenant": tenant, "provider": provider, "kind": ref.kind},
                )
                return []
            if item.recording is not None:
                await self.recordings.fetch(tenant, adapter, item.recording)
            opening = item.opening
            if opening is not None and all(e.event_id != opening.event_id for e in events):
                await self._remember_customer(tenant, opening)
            envelopes = [event.envelope(conversation_id) for event in events]
            outcomes = await self.ingest.submit(tenant, envelopes) if envelopes else []
            if new_call:
                async with self.db.write() as conn:
                    await crepo.remember_call(
                        conn,
                        {
                            "tenant_id": tenant,
                            "provider": provider,
                            "call_id": ref.call_id,
                            "conversation_id": conversation_id,
                            "provider_call_id": ref.call_id,
                            "created_at": self.clock.now(),
                        },
                    )
        for outcome in outcomes:
            if outcome.outcome == "rejected":
                log.info(
                    "provider event rejected",
                    extra={"tenant": tenant, "event_id": outcome.event_id, "code": outcome.code},
                )
        return outcomes

    async def _remember_customer(self, tenant: str, opening) -> None:
        """A contact that wrote into a conversation it did not open (one we started)
        says who it is (a WhatsApp profile name): remembered as the contact's customer
        when none is known, so that the conversation's Customer Name fills (ingest)."""
        customer, contact = opening.data.get("customer") or {}, opening.data.get("contact")
        name = customer.get("name")
        if not isinstance(name, str) or not name or name == contact or "\x00" in name:
            return
        if not isinstance(contact, str) or len(contact) > m.customers.c.id.type.length:
            return
        async with self.db.read() as conn:
            if await repo.customer_of_contact(conn, tenant, contact) is not None:
                return
        with contextlib.suppress(IntegrityError):  # another delivery remembered it first
            async with self.db.write() as conn:
                await conn.execute(
                    insert(m.customers).values(
                        tenant_id=tenant,
                        id=contact,
                        name=name,
                        phone=customer.get("phone"),
                        contact=contact,
                        updated_at=self.clock.now(),
                    )
                )

    async def _resolve(self, tenant: str, provider: str, item: Inbound):
        """(conversation id, events to ingest, whether a new call reference is mapped)."""
        ref = item.reference
        events = list(item.events)
        async with self.db.read() as conn:
            if ref.kind == "call":
                mapped = await crepo.call_conversation(conn, tenant, provider, ref.call_id or "")
                if mapped is not None:
                    return mapped["conversation_id"], events, False
            else:
                current = await crepo.latest_conversation_of_contact(
                    conn, tenant, ref.contact or "", ref.channel
                )
                if current is not None:
                    return current["id"], events, False
                if item.opening is None:  # a late status: the contact's last conversation
                    last = await crepo.latest_conversation_of_contact(
                        conn, tenant, ref.contact or "", ref.channel, open_only=False
                    )
                    return (last["id"] if last else None), events, False
            if item.opening is None:
                return None, events, False
            tenant_row = await repo.get_tenant(conn, tenant)
            merge = bool(tenant_row and tenant_row["merge_channels"] and ref.contact)
            if merge:
                other = await crepo.latest_conversation_of_contact(conn, tenant, ref.contact)
                if other is not None:
                    joined = ChannelEvent(
                        _derived_id(item.opening.event_id, "joined"),
                        "media.channel_added",
                        item.opening.occurred_at,
                        {"channel": ref.channel},
                    )
                    return other["id"], [joined, *events], ref.kind == "call"
        opening = item.opening
        data = dict(opening.data)
        if "team" not in data:
            team = await self.team_of_number(tenant, ref.contacto_number)
            if team is not None:
                data["team"] = team
        opening = ChannelEvent(opening.event_id, opening.type, opening.occurred_at, data)
        conversation_id = conversation_id_for(opening.event_id)
        channels_added: list[ChannelEvent] = []
        if ref.kind == "message" or merge:
            # The lookup above and the ingest below are not one transaction, and the lock
            # in deliver() is this process's: first messages arriving at once elsewhere
            # could each open a conversation. The database picks one for all of them: one
            # per channel, or with merge_channels one per contact whatever the channel,
            # a call included (without merge_channels each call is its own conversation).
            async with self.db.write() as conn:
                conversation_id, opened_on = await crepo.claim_opening(
                    conn, tenant, ref.contact or "", ref.channel, conversation_id, any_channel=merge
                )
            if opened_on != ref.channel:
                # Won by a first contact on another channel. Whichever of the two openings
                # is stored first names the conversation's channel, the other is `stale`:
                # both channels are added after it (adding the one it has changes nothing
                # but the version), so it carries both either way.
                channels_added = [
                    ChannelEvent(
                        _derived_id(opening.event_id, f"joined:{channel}"),
                        "media.channel_added",
                        opening.occurred_at,
                        {"channel": channel},
                    )
                    for channel in (opened_on, ref.channel)
                ]
        # A claim won elsewhere: this opening still goes first, since the winner may not
        # have stored the conversation yet; whichever opening comes second is `stale`.
        return conversation_id, [opening, *channels_added, *events], ref.kind == "call"


def _derived_id(event_id: str, suffix: str) -> str:
    text = f"{event_id}:{suffix}"
    return text if len(text) <= 200 else "h:" + hashlib.sha256(text.encode()).hexdigest()
