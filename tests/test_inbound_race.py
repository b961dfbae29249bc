"""One contact's first messages arriving at once open one conversation
(server/providers/inbound.py, docs/channels.md): the claim in `inbound_openings` from two
connection pools; twenty messages at once through Twilio's signed webhook on one
server, and split over two `switchboard serve` processes; a web chat visitor's first
messages on two processes. Replays stay duplicates; once the conversation is closed,
the next burst opens exactly one new conversation."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

from sqlalchemy import select

from channels import twilio
from server.providers import repository as crepo
from server.providers import webchat
from server.storage import models as m
from server.storage.db import Database
from tests.app_support import prepare_database
from tests.routing_support import now_iso
from tests.server_support import LiveServer, live_server, spawned_server
from tests.support import Backend, wait_for
from tests.test_webchat import SHOP, set_up, visitor_socket
from tests.test_webhooks import OUR_NUMBER, TWILIO_CREDENTIALS, configure, form

BURST = 20


@contextlib.asynccontextmanager
async def database(backend: Backend) -> AsyncIterator[Database]:
    db = Database(backend.database_url, pool_size=2)
    try:
        yield db
    finally:
        await db.close()


async def post_message(
    server: LiveServer, contact: str, text: str, sid: str | None = None, channel: str = "sms"
) -> str:
    """Twilio's inbound message webhook (SMS, or WhatsApp with channel="whatsapp"),
    signed for the URL this server is called at."""
    sid = sid or "SM" + secrets.token_hex(16)
    await post_signed_twilio(
        server,
        {
            "MessageSid": sid,
            "AccountSid": TWILIO_CREDENTIALS["account_sid"],
            "From": f"whatsapp:{contact}" if channel == "whatsapp" else contact,
            "To": OUR_NUMBER,
            "Body": text,
            "NumMedia": "0",
        },
    )
    return sid


async def post_signed_twilio(server: LiveServer, params: dict) -> None:
    """A Twilio webhook form, signed for the URL this server is called at; answered 200."""
    url = f"{server.url}/webhooks/twilio/acme"
    signature = twilio.signature(TWILIO_CREDENTIALS["auth_token"], url, list(params.items()))
    response = await server.api.client.post(
        url,
        content=form(params),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": signature,
        },
    )
    assert response.status_code == 200, response.text


async def burst(servers: list[LiveServer], contact: str, label: str) -> list[tuple[str, str]]:
    """BURST first messages of `contact` at once, spread over `servers`; their
    (MessageSid, text)."""
    texts = [f"{label} #{number}" for number in range(BURST)]
    sids = await asyncio.gather(
        *(
            post_message(servers[number % len(servers)], contact, text)
            for number, text in enumerate(texts)
        )
    )
    return list(zip(sids, texts, strict=True))


async def conversations_of(db: Database, contact: str, channel: str) -> dict[str, dict]:
    """The contact's conversations on `channel`, oldest first: status and the
    customer's message texts."""
    c = m.conversations
    async with db.read() as conn:
        rows = await conn.execute(
            select(c.c.id, c.c.status)
            .where(c.c.tenant_id == "acme", c.c.contact == contact, c.c.channel == channel)
            .order_by(c.c.created_at, c.c.id)
        )
        found = {row.id: {"status": row.status} for row in rows}
        return await with_texts(conn, found)


async def with_texts(conn, found: dict[str, dict]) -> dict[str, dict]:
    """`found` (by conversation id), each with the set of its messages' texts."""
    msg = m.messages
    for item in found.values():
        item["texts"] = set()
    if found:
        texts = await conn.execute(
            select(msg.c.conversation_id, msg.c.text).where(
                msg.c.tenant_id == "acme", msg.c.conversation_id.in_(list(found))
            )
        )
        for row in texts:
            found[row.conversation_id]["texts"].add(row.text)
    return found


async def close(server: LiveServer, conversation_id: str) -> None:
    """The customer hangs up: the conversation is closed."""
    api = server.api
    results = await api.post_events(
        [api.event("media.hangup", conversation_id, now_iso(), source="customer")]
    )
    assert results[0]["outcome"] == "applied", results


async def assert_bursts_open_one_conversation_each(
    servers: list[LiveServer], db: Database, contact: str
) -> None:
    """A burst opens one conversation holding all its messages; a replay of the burst
    changes nothing; after a close the next burst opens exactly one more."""
    first = await burst(servers, contact, "first")
    found = await conversations_of(db, contact, "sms")
    assert len(found) == 1, {cid: len(item["texts"]) for cid, item in found.items()}
    (first_id,) = found
    assert found[first_id]["texts"] == {text for _, text in first}

    # Twilio retrying every one of them, on the other process: all duplicates.
    await asyncio.gather(
        *(
            post_message(servers[(number + 1) % len(servers)], contact, text, sid)
            for number, (sid, text) in enumerate(first)
        )
    )
    assert await conversations_of(db, contact, "sms") == found

    await close(servers[0], first_id)
    second = await burst(servers, contact, "second")
    found = await conversations_of(db, contact, "sms")
    assert len(found) == 2, {cid: len(item["texts"]) for cid, item in found.items()}
    second_id = next(cid for cid in found if cid != first_id)
    assert found[second_id] == {"status": "new", "texts": {text for _, text in second}}
    assert found[first_id]["status"] == "closed"


async def test_a_claim_stands_until_its_conversation_is_closed(api, backend: Backend):
    """server/channel_repository.claim_opening, from two connection pools at once."""
    contact = "+34911000115"

    async def claim(db: Database, candidate: str, channel: str = "sms") -> str:
        async with db.write() as conn:
            claimed, opened_on = await crepo.claim_opening(
                conn, "acme", contact, channel, candidate
            )
        assert opened_on == channel  # per channel: always its own
        return claimed

    async with database(backend) as other:
        pools = (api.services.db, other)
        answers = await asyncio.gather(
            *(claim(pools[number % 2], f"c-first-{number}") for number in range(10))
        )
        # None of them is stored yet: the first claim stands for all.
        (winner,) = set(answers)
        created = api.event(
            "conversation.created",
            winner,
            now_iso(),
            channel="sms",
            contact=contact,
            customer={"name": "Ann"},
        )
        assert (await api.post_events([created]))[0]["outcome"] == "applied"
        assert await claim(other, "c-late") == winner
        assert await claim(api.services.db, "c-chat", "chat") == "c-chat"  # a channel of its own

        hangup = api.event("media.hangup", winner, now_iso(), source="customer")
        assert (await api.post_events([hangup]))[0]["outcome"] == "applied"
        answers = await asyncio.gather(
            *(claim(pools[number % 2], f"c-second-{number}") for number in range(10))
        )
        (second,) = set(answers)
        assert second != winner and second.startswith("c-second-")


async def test_twenty_first_messages_at_once_open_one_conversation(backend: Backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server, database(backend) as db:
        await configure(server.api, "twilio", ["call", "sms"], TWILIO_CREDENTIALS)
        await assert_bursts_open_one_conversation_each([server], db, "+34911000111")


async def test_first_messages_on_two_processes_open_one_conversation(backend: Backend, tmp_path):
    """The processes share only the database (and Redis): their in-process locks
    cannot see each other, so only the database can make the two bursts agree."""
    await prepare_database(backend.database_url)
    async with (
        spawned_server(backend, tmp_path / "one") as one,
        spawned_server(backend, tmp_path / "two") as two,
        database(backend) as db,
    ):
        await configure(one.api, "twilio", ["call", "sms"], TWILIO_CREDENTIALS)
        contacts = ["+34911000112", "+34911000113", "+34911000114"]
        await asyncio.gather(
            *(
                assert_bursts_open_one_conversation_each([one, two], db, contact)
                for contact in contacts
            )
        )


async def test_a_visitors_first_chat_messages_on_two_processes_open_one_chat(
    backend: Backend, tmp_path
):
    await prepare_database(backend.database_url)
    async with (
        spawned_server(backend, tmp_path / "one") as one,
        spawned_server(backend, tmp_path / "two") as two,
        database(backend) as db,
    ):
        await set_up(one, SHOP)
        visitor = secrets.token_hex(16)
        contact = webchat.visitor_contact("acme", visitor)
        hello = {"team": "support"}
        async with (
            visitor_socket(one, visitor, hello=hello) as here,
            visitor_socket(two, visitor, hello=hello) as there,
        ):
            for socket in (here, there):
                await socket.wait(lambda f: f["type"] == "status" and f["status"] == "ready")
            per_socket = 5  # within the visitor's message burst in each process
            await asyncio.gather(
                *(
                    socket.send({"type": "message", "id": f"{name}{n}", "text": f"{name} {n}"})
                    for name, socket in (("here", here), ("there", there))
                    for n in range(per_socket)
                )
            )

            async def all_stored() -> dict | None:
                found = await conversations_of(db, contact, "chat")
                count = sum(len(item["texts"]) for item in found.values())
                return found if count == 2 * per_socket else None

            found = await wait_for(all_stored, 15)
            assert len(found) == 1, {cid: sorted(item["texts"]) for cid, item in found.items()}
            # Each socket shows the one chat, its own messages echoed (the other
            # process's reach it only through Redis, which the SQLite backend lacks).
            for name, socket in (("here", here), ("there", there)):
                for n in range(per_socket):
                    await socket.wait(lambda f, i=f"w-{name}{n}": f.get("id") == i)
            assert not [f for f in here.frames + there.frames if f["type"] == "error"]
