"""With the tenant's `merge_channels`, one contact's first messages on different
channels arriving at once open one conversation that carries every channel
(server/providers/inbound.py, docs/channels.md): SMS and WhatsApp bursts through Twilio's signed
webhook split over two `switchboard serve` processes; the per-contact claim in
`inbound_openings` from two connection pools; the conversation carries both channels
whichever of the two openings is stored first; without `merge_channels` each
channel keeps its own conversation."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

from sqlalchemy import select

from channels.base import ChannelEvent, Inbound, Reference, customer_for, event_id
from server.providers import repository as crepo
from server.providers.inbound import conversation_id_for
from server.storage import models as m
from server.storage.db import Database
from server.storage.repository import decode_channels
from tests.app_support import prepare_database
from tests.routing_support import now_iso
from tests.server_support import LiveServer, live_server, spawned_server
from tests.support import Backend
from tests.test_inbound_race import (
    close,
    database,
    post_message,
    post_signed_twilio,
    with_texts,
)
from tests.test_webhooks import OUR_NUMBER, TWILIO_CREDENTIALS, configure

CHANNELS = ("sms", "whatsapp")
PER_CHANNEL = 4


async def set_up(server: LiveServer, merge_channels: bool = True) -> None:
    """Twilio for calls, SMS and WhatsApp; the tenant's merge_channels as given."""
    await configure(server.api, "twilio", ["call", *CHANNELS], TWILIO_CREDENTIALS)
    response = await server.api.client.put(
        "/api/v1/tenant",
        json={"merge_channels": merge_channels},
        headers=server.api.auth("admin"),
    )
    assert response.status_code == 200, response.text


async def post_call(server: LiveServer, contact: str) -> None:
    """Twilio's inbound voice webhook: a call from `contact` ringing."""
    await post_signed_twilio(
        server,
        {
            "AccountSid": TWILIO_CREDENTIALS["account_sid"],
            "CallSid": "CA" + secrets.token_hex(16),
            "CallStatus": "ringing",
            "Direction": "inbound",
            "From": contact,
            "To": OUR_NUMBER,
        },
    )


@contextlib.asynccontextmanager
async def two_servers(backend: Backend, tmp_path) -> AsyncIterator[tuple[list, Database]]:
    """Two `switchboard serve` processes on one database, Twilio set up with
    merge_channels; and a pool of the test's own on that database."""
    await prepare_database(backend.database_url)
    async with (
        spawned_server(backend, tmp_path / "one") as one,
        spawned_server(backend, tmp_path / "two") as two,
        database(backend) as db,
    ):
        await set_up(one)
        yield [one, two], db


async def conversations_of_contact(db, contact: str) -> dict[str, dict]:
    """Every conversation of `contact`, whatever its channel: status, channel, the set
    of channels it carries, and the customer's message texts."""
    c = m.conversations
    async with db.read() as conn:
        rows = await conn.execute(
            select(c.c.id, c.c.status, c.c.channel, c.c.channels).where(
                c.c.tenant_id == "acme", c.c.contact == contact
            )
        )
        found = {
            row.id: {
                "status": row.status,
                "channel": row.channel,
                "channels": set(decode_channels(row.channels)),
            }
            for row in rows
        }
        return await with_texts(conn, found)


async def mixed_burst(servers: list[LiveServer], contact: str, label: str) -> list[tuple]:
    """PER_CHANNEL first messages of `contact` on each channel, all at once, each
    channel spread over `servers`; their (MessageSid, text, channel)."""
    sent = [
        (f"{label} {channel} #{number}", channel, servers[number % len(servers)])
        for channel in CHANNELS
        for number in range(PER_CHANNEL)
    ]
    sids = await asyncio.gather(
        *(post_message(server, contact, text, channel=channel) for text, channel, server in sent)
    )
    return [(sid, text, channel) for sid, (text, channel, _) in zip(sids, sent, strict=True)]


def summary(found: dict[str, dict]) -> dict:
    return {cid: (item["channels"], len(item["texts"])) for cid, item in found.items()}


async def assert_mixed_bursts_open_one_conversation_each(
    servers: list[LiveServer], db, contact: str
) -> None:
    """A burst on both channels opens one omnichannel conversation holding all its
    messages; a replay changes nothing; after a close the next one opens exactly one."""
    first = await mixed_burst(servers, contact, "first")
    found = await conversations_of_contact(db, contact)
    assert len(found) == 1, summary(found)
    (first_id,) = found
    assert found[first_id]["channels"] == set(CHANNELS), summary(found)
    assert found[first_id]["channel"] == "omnichannel"
    assert found[first_id]["texts"] == {text for _, text, _ in first}

    # Twilio retrying every one of them, on the other process: all duplicates.
    await asyncio.gather(
        *(
            post_message(servers[(number + 1) % len(servers)], contact, text, sid, channel)
            for number, (sid, text, channel) in enumerate(first)
        )
    )
    assert await conversations_of_contact(db, contact) == found

    await close(servers[0], first_id)
    second = await mixed_burst(servers, contact, "second")
    found = await conversations_of_contact(db, contact)
    assert len(found) == 2, summary(found)
    second_id = next(cid for cid in found if cid != first_id)
    assert found[second_id] == {
        "status": "new",
        "channel": "omnichannel",
        "channels": set(CHANNELS),
        "texts": {text for _, text, _ in second},
    }


async def test_first_messages_on_two_channels_and_two_processes_open_one_conversation(
    backend: Backend, tmp_path
):
    """The processes share only the database (and Redis), and each channel's claim
    used to be its own: only a claim per contact makes the two channels agree."""
    async with two_servers(backend, tmp_path) as (servers, db):
        contacts = ["+34911000121", "+34911000122", "+34911000123"]
        await asyncio.gather(
            *(
                assert_mixed_bursts_open_one_conversation_each(servers, db, contact)
                for contact in contacts
            )
        )


async def test_a_call_and_first_messages_at_once_on_two_processes_open_one_conversation(
    backend: Backend, tmp_path
):
    """A call claims the contact's opening as a first message does: a call ringing
    while first SMSes arrive, over two processes, ends in one conversation carrying
    the call and SMS. (Calls were not claimed: the call opened a conversation of its
    own beside the messages' one.)"""
    async with two_servers(backend, tmp_path) as (servers, db):
        contacts = [f"+3491100013{number}" for number in range(4)]

        async def contact_at_once(number: int, contact: str) -> list[str]:
            texts = [f"sms #{index}" for index in range(3)]
            await asyncio.gather(
                post_call(servers[number % 2], contact),
                *(
                    post_message(servers[(number + index + 1) % 2], contact, text)
                    for index, text in enumerate(texts)
                ),
            )
            return texts

        sent = await asyncio.gather(*(contact_at_once(n, c) for n, c in enumerate(contacts)))
        for contact, texts in zip(contacts, sent, strict=True):
            found = await conversations_of_contact(db, contact)
            assert len(found) == 1, (contact, summary(found))
            (item,) = found.values()
            assert item["channels"] == {"call", "sms"}, (contact, summary(found))
            assert item["channel"] == "omnichannel" and item["texts"] == set(texts)


async def test_a_claim_per_contact_stands_with_its_channel_until_closed(api, backend: Backend):
    """server/channel_repository.claim_opening per contact, from two connection pools."""
    contact = "+34911000124"

    async def claim(db, candidate: str, channel: str) -> tuple[str, str]:
        async with db.write() as conn:
            return await crepo.claim_opening(
                conn, "acme", contact, channel, candidate, any_channel=True
            )

    async with database(backend) as other:
        pools = (api.services.db, other)
        answers = await asyncio.gather(
            *(
                claim(pools[number % 2], f"c-first-{number}", CHANNELS[number % 2])
                for number in range(10)
            )
        )
        # None of them is stored yet: the first claim and its channel stand for all.
        ((winner, opened_on),) = set(answers)
        assert opened_on == CHANNELS[int(winner.rsplit("-", 1)[1]) % 2]
        created = api.event(
            "conversation.created",
            winner,
            now_iso(),
            channel=opened_on,
            contact=contact,
            customer={"name": "Ann"},
        )
        assert (await api.post_events([created]))[0]["outcome"] == "applied"
        assert await claim(other, "c-late", "whatsapp") == (winner, opened_on)
        # The per-channel claims are keys of their own, untouched.
        async with api.services.db.write() as conn:
            assert await crepo.claim_opening(conn, "acme", contact, "sms", "c-sms") == (
                "c-sms",
                "sms",
            )

        hangup = api.event("media.hangup", winner, now_iso(), source="customer")
        assert (await api.post_events([hangup]))[0]["outcome"] == "applied"
        assert await claim(other, "c-second", "whatsapp") == ("c-second", "whatsapp")


async def test_the_other_channels_opening_stored_first_still_carries_both(
    backend: Backend, tmp_path
):
    """An SMS has claimed the contact's opening (it has resolved its conversation) but
    not stored it yet when a WhatsApp message arrives: the WhatsApp opening creates
    the conversation, on WhatsApp, and the SMS opening that follows is `stale`. The
    conversation carries the SMS channel all the same. (deliver() in its two halves,
    the WhatsApp webhook's whole delivery between them.)"""
    async with live_server(backend, tmp_path / "data") as server, database(backend) as db:
        await set_up(server)
        contact = "+34911000125"
        sid = "SM" + "d" * 32
        at = server.services.clock.now()
        opening = ChannelEvent(
            event_id("twilio", sid, "created"),
            "conversation.created",
            at,
            {"channel": "sms", "contact": contact, "customer": customer_for(contact)},
        )
        message = ChannelEvent(
            event_id("twilio", sid, "message"),
            "media.message",
            at,
            {"message_id": sid, "sender": "customer", "text": "by sms"},
        )
        sms = Inbound(
            Reference(kind="message", channel="sms", contact=contact),
            (message,),
            opening,
        )
        sms_conversation, sms_events, _ = await server.services.inbound._resolve(
            "acme", "twilio", sms
        )
        assert sms_conversation == conversation_id_for(opening.event_id)

        await post_message(server, contact, "on whatsapp", channel="whatsapp")
        outcomes = await server.services.ingest.submit(
            "acme", [event.envelope(sms_conversation) for event in sms_events]
        )
        assert [outcome.outcome for outcome in outcomes] == ["stale", "applied"], outcomes
        found = await conversations_of_contact(db, contact)
        assert found == {
            sms_conversation: {
                "status": "new",
                "channel": "omnichannel",
                "channels": set(CHANNELS),
                "texts": {"on whatsapp", "by sms"},
            }
        }


async def test_first_messages_one_after_the_other_on_two_channels(backend: Backend, tmp_path):
    """Sequential: with merge_channels the second channel joins the open conversation;
    without, each channel opens its own."""
    async with live_server(backend, tmp_path / "data") as server, database(backend) as db:
        await set_up(server)
        merged = "+34911000126"
        await post_message(server, merged, "hello by sms", channel="sms")
        await post_message(server, merged, "and on whatsapp", channel="whatsapp")
        await post_message(server, merged, "sms again", channel="sms")
        found = await conversations_of_contact(db, merged)
        assert [(item["channel"], item["channels"], item["texts"]) for item in found.values()] == [
            ("omnichannel", set(CHANNELS), {"hello by sms", "and on whatsapp", "sms again"})
        ]

        await set_up(server, merge_channels=False)
        apart = "+34911000127"
        await post_message(server, apart, "hello by sms", channel="sms")
        await post_message(server, apart, "and on whatsapp", channel="whatsapp")
        found = await conversations_of_contact(db, apart)
        assert sorted((item["channel"], item["texts"]) for item in found.values()) == [
            ("sms", {"hello by sms"}),
            ("whatsapp", {"and on whatsapp"}),
        ]
