"""Web chat over real sockets (`WS /webchat/{tenant}`): a visitor's hello and messages
become a conversation in a supervisor's view; the agent's reply reaches the visitor,
also through a second process behind Redis; foreign origins are refused; messages are
rate limited; malformed frames get error frames; the widget and its page are served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.edge.ws import webchat as webchat_socket
from server.providers import repository as crepo
from server.providers import webchat
from tests.routing_support import now_iso, put_agent, put_team
from tests.server_support import LiveServer, live_server, spawned_server
from tests.support import TEST_REDIS_URL, Backend, wait_for

SHOP = "https://shop.example.com"


class Visitor:
    """A widget's socket: keeps every frame it receives."""

    def __init__(self, socket: ClientConnection, visitor: str):
        self.socket = socket
        self.visitor = visitor
        self.frames: list[dict] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for raw in self.socket:
                self.frames.append(json.loads(raw))

    async def send(self, frame) -> None:
        await self.socket.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def wait(self, predicate, timeout: float = 10.0, since: int = 0) -> dict:
        """The latest frame matching `predicate` among those received from index
        `since` on, once there is one."""
        found: list[dict] = []

        def seen() -> bool:
            found[:] = [f for f in self.frames[since:] if predicate(f)]
            return bool(found)

        await wait_for(seen, timeout)
        return found[-1]

    def of(self, type_: str) -> list[dict]:
        return [f for f in self.frames if f["type"] == type_]


def webchat_url(server: LiveServer, tenant: str = "acme") -> str:
    return server.url.replace("http://", "ws://") + f"/webchat/{tenant}"


@contextlib.asynccontextmanager
async def visitor_socket(
    server: LiveServer,
    visitor: str | None = None,
    origin: str | None = SHOP,
    hello: dict | None = None,
    tenant: str = "acme",
) -> AsyncIterator[Visitor]:
    visitor = visitor or secrets.token_hex(16)
    async with connect(webchat_url(server, tenant), origin=origin) as socket:
        client = Visitor(socket, visitor)
        if hello is not None:
            await client.send({"type": "hello", "visitor": visitor, **hello})
        yield client


async def set_up(server: LiveServer, origin: str = SHOP) -> None:
    """acme embeds the widget on `origin`; team support with agent a1."""
    api = server.api
    response = await api.client.put(
        "/api/v1/tenant", json={"widget_origins": [origin]}, headers=api.auth("admin")
    )
    assert response.status_code == 200, response.text
    await put_team(api, "support")
    await put_agent(api, "a1", ["support"])


async def route_to(server: LiveServer, cid: str, agent: str = "a1") -> None:
    """Play the router (the test tenant routes externally) up to the agent's accept."""
    api = server.api
    offer = f"o-{cid}"
    results = await api.post_events(
        [
            api.event("routing.enqueued", cid, now_iso(), team="support"),
            api.event(
                "routing.offered",
                cid,
                now_iso(),
                agent_id=agent,
                offer_id=offer,
                expires_at="2099-01-01T00:00:00Z",
            ),
            api.event("agent.accepted", cid, now_iso(), agent_id=agent, offer_id=offer),
        ]
    )
    assert [r["outcome"] for r in results] == ["applied"] * 3, results


async def agent_reply(server: LiveServer, cid: str, text: str, agent: str = "a1") -> dict:
    response = await server.api.client.post(
        f"/api/v1/conversations/{cid}/messages",
        json={"text": text},
        headers=server.api.auth("agent", agent),
    )
    assert response.status_code == 202, response.text
    return response.json()


CHAT_VIEW = {
    "filters": [{"field": "channel", "op": "in", "value": ["chat"]}],
    "columns": ["id", "customer_name", "contact", "status", "team"],
    "sort": [{"field": "created_at", "dir": "desc"}],
}


async def test_a_visitor_chats_with_an_agent_end_to_end(backend: Backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        await set_up(server)
        async with server.ws("supervisor", "sup1") as supervisor:
            snapshot = await supervisor.request({"type": "subscribe", "view": CHAT_VIEW})
            assert snapshot["rows"] == []
            hello = {"name": "Zoë <b>Bold</b>", "email": "zoe@example.com", "team": "support"}
            async with visitor_socket(server, hello=hello) as visitor:
                await visitor.wait(
                    lambda f: f == {"type": "status", "status": "ready", "state": None}
                )
                markup = "Hi! <script>alert(1)</script> & ¿dónde está mi pedido? 🚲"
                await visitor.send({"type": "message", "id": "m1", "text": markup})
                echo = await visitor.wait(lambda f: f["type"] == "message")
                assert echo["id"] == "w-m1" and echo["sender"] == "customer"
                assert echo["text"] == markup  # stored and sent back as the same text
                await visitor.wait(lambda f: f["type"] == "status" and f["status"] == "new")

                # The conversation shows in the supervisor's live view.
                delta = await supervisor.wait(lambda f: f["type"] == "delta" and f["upsert"])
                row = delta["upsert"][0]
                cid = row["id"]
                assert row["customer_name"] == "Zoë <b>Bold</b>"
                assert row["contact"] == webchat.visitor_contact("acme", visitor.visitor)
                assert row["team"] == "support" and row["status"] == "new"

                detail = await server.api.conversation(cid)
                assert detail["conversation"]["channel"] == "chat"
                assert detail["customer"]["email"] == "zoe@example.com"
                assert [m["text"] for m in detail["transcript"]] == [markup]

                # The same message again (a widget resending after a reconnect) is one.
                await visitor.send({"type": "message", "id": "m1", "text": markup})
                await visitor.send({"type": "message", "id": "m2", "text": "still there?"})
                await visitor.wait(lambda f: f.get("id") == "w-m2")
                detail = await server.api.conversation(cid)
                assert [m["message_id"] for m in detail["transcript"]] == ["w-m1", "w-m2"]

                await route_to(server, cid)
                active = await visitor.wait(
                    lambda f: f["type"] == "status" and f["status"] == "active"
                )
                assert active["agent"] == "Agent a1" and active["state"] == "customer_answered"

                answer = await agent_reply(server, cid, "Hello Zoë, <i>let me look</i>.")
                reply = await visitor.wait(
                    lambda f: f["type"] == "message" and f["sender"] == "agent"
                )
                assert reply["id"] == answer["message_id"]
                assert reply["text"] == "Hello Zoë, <i>let me look</i>."

                async def delivered() -> bool:
                    transcript = (await server.api.conversation(cid))["transcript"]
                    return transcript[-1]["status"] == "delivered"

                await wait_for(delivered, 10, message="the reply marked delivered")

                # A second tab of the same visitor gets the whole chat and its status.
                async with visitor_socket(server, visitor.visitor, hello={}) as tab:
                    await tab.wait(lambda f: f["type"] == "status" and f["status"] == "active")
                    assert [f["id"] for f in tab.of("message")] == [
                        "w-m1",
                        "w-m2",
                        answer["message_id"],
                    ]
                    await tab.send({"type": "message", "id": "m3", "text": "from the other tab"})
                    await visitor.wait(lambda f: f.get("id") == "w-m3")

                # The agent ends the chat; the visitor's next message opens a new one.
                response = await server.api.client.post(
                    f"/api/v1/conversations/{cid}/hangup", headers=server.api.auth("agent", "a1")
                )
                assert response.status_code == 200, response.text
                await visitor.wait(lambda f: f["type"] == "status" and f["status"] == "wrap_up")
                [wrapped] = await server.api.post_events(
                    [server.api.event("wrapup.submitted", cid, now_iso(), disposition="resolved")]
                )
                assert wrapped["outcome"] == "applied", wrapped
                await visitor.wait(lambda f: f["type"] == "status" and f["status"] == "closed")
                mark = len(visitor.frames)
                await visitor.send({"type": "message", "id": "m4", "text": "one more thing"})
                await visitor.wait(lambda f: f.get("id") == "w-m4", since=mark)
                await visitor.wait(
                    lambda f: f["type"] == "status" and f["status"] == "new", since=mark
                )
                second = await supervisor.wait(
                    lambda f: f["type"] == "delta" and any(r["id"] != cid for r in f["upsert"])
                )
                new_cid = next(r["id"] for r in second["upsert"] if r["id"] != cid)
                transcript = (await server.api.conversation(new_cid))["transcript"]
                assert [m["text"] for m in transcript] == ["one more thing"]

                # Ending it while it waits: the customer left before an agent came.
                await visitor.send({"type": "end"})
                await visitor.wait(
                    lambda f: f == {"type": "status", "status": "closed", "state": "dropped"}
                )


async def test_a_reply_reaches_a_visitor_on_another_process(postgres_url, redis_prefix, tmp_path):
    """The visitor is connected to a second `switchboard serve` process; the agent's
    reply is made through the first. Only Redis carries the news between them."""
    backend = Backend("postgresql-redis", postgres_url, TEST_REDIS_URL, redis_prefix)
    async with live_server(backend, tmp_path / "one") as first:
        await set_up(first)
        async with (
            spawned_server(backend, tmp_path / "two") as second,
            visitor_socket(second, hello={"team": "support"}) as visitor,
        ):
            await visitor.wait(lambda f: f["type"] == "status")
            await visitor.send({"type": "message", "id": "hi", "text": "hello from afar"})
            await visitor.wait(lambda f: f.get("id") == "w-hi")
            contact = webchat.visitor_contact("acme", visitor.visitor)

            async def conversation_id():
                async with first.services.db.read() as conn:
                    row = await crepo.latest_conversation_of_contact(conn, "acme", contact)
                return row and row["id"]

            cid = await wait_for(conversation_id, 10)
            await route_to(first, cid)
            await visitor.wait(lambda f: f["type"] == "status" and f["status"] == "active")
            answer = await agent_reply(first, cid, "answered by process one")
            reply = await visitor.wait(lambda f: f.get("id") == answer["message_id"])
            assert reply["sender"] == "agent" and reply["text"] == "answered by process one"


async def test_the_handshake_is_refused_from_other_origins(backend: Backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        await set_up(server)
        for origin in ("https://evil.example.com", "http://shop.example.com", None):
            with pytest.raises(InvalidStatus) as refused:
                async with visitor_socket(server, origin=origin):
                    pass
            assert refused.value.response.status_code == 403
            assert b"may not open" in refused.value.response.body
        # The other tenant has no widget origins: refused from the shop too.
        with pytest.raises(InvalidStatus) as refused:
            async with visitor_socket(server, tenant="globex"):
                pass
        assert refused.value.response.status_code == 403
        for tenant in ("nobody", "%00", "x" * 65):
            with pytest.raises(InvalidStatus) as refused:
                async with visitor_socket(server, tenant=tenant):
                    pass
            assert refused.value.response.status_code == 404
        # With a trailing slash, or in capitals, the listed origin is the same origin.
        async with visitor_socket(server, origin=SHOP.upper() + "/", hello={}) as visitor:
            await visitor.wait(lambda f: f["type"] == "status")


async def test_messages_are_rate_limited_per_visitor(backend: Backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        await set_up(server)
        burst, _ = webchat.MESSAGE_RATE
        sent = burst + 10
        async with visitor_socket(server, hello={}) as visitor:
            for number in range(sent):
                await visitor.send({"type": "message", "id": f"n{number}", "text": f"#{number}"})
            limited = await visitor.wait(
                lambda f: f["type"] == "error" and f["code"] == "rate_limited"
            )
            assert limited["retry_after"] > 0 and "too many messages" in limited["message"]

            def answered() -> bool:
                limited = [e for e in visitor.of("error") if e["code"] == "rate_limited"]
                return len(visitor.of("message")) + len(limited) >= sent

            await wait_for(answered, 15)
            taken = len(visitor.of("message"))
            assert burst <= taken < sent
            # A second socket of the same visitor shares the bucket: a burst there is
            # limited too (a bucket of its own would take all of it).
            async with visitor_socket(server, visitor.visitor, hello={}) as tab:
                await tab.wait(lambda f: f["type"] == "status")
                for number in range(burst):
                    await tab.send({"type": "message", "id": f"t{number}", "text": "again"})
                await tab.wait(lambda f: f["type"] == "error" and f["code"] == "rate_limited")


async def test_malformed_frames_get_error_frames_and_the_socket_stays_open(
    backend: Backend, tmp_path
):
    async with live_server(backend, tmp_path / "data") as server:
        await set_up(server)
        async with visitor_socket(server) as visitor:
            cases = [
                ("not json", "malformed"),
                ("[1, 2]", "malformed"),
                ('{"text": "no type"}', "malformed"),
                (b"\x81\xa4type\xa5hello", "malformed"),  # binary (msgpack) frames
                ({"type": "shout"}, "unknown_type"),
                ({"type": "message", "text": "before hello"}, "hello_first"),
                ({"type": "hello"}, "invalid_field"),
                ({"type": "hello", "visitor": "short"}, "invalid_field"),
                ({"type": "hello", "visitor": "x" * 32, "team": "nowhere"}, "invalid_field"),
                ({"type": "hello", "visitor": "x" * 32, "email": "nope"}, "invalid_field"),
                ({"type": "hello", "visitor": "x" * 32, "name": "a" * 201}, "invalid_field"),
                ({"type": "hello", "visitor": "x" * 32, "admin": True}, "invalid_field"),
                ('{"type": "hello", "visitor": "xxxxxxxxxxxxxxxx", "name": "\\ud800"}', None),
            ]
            for frame, code in cases:
                before = len(visitor.of("error"))
                await visitor.send(frame)
                error = await visitor.wait(lambda f, n=before: len(visitor.of("error")) > n)
                assert error["type"] == "error"
                if code is not None:
                    assert error["code"] == code, (frame, error)
                assert error["message"]
            await visitor.send({"type": "hello", "visitor": "v" * 32})
            await visitor.wait(lambda f: f["type"] == "status")
            more = [
                ({"type": "hello", "visitor": "v" * 32}, "already_introduced"),
                ({"type": "message"}, "invalid_field"),
                ({"type": "message", "text": "   "}, "invalid_field"),
                ({"type": "message", "text": "x" * (webchat_socket.MAX_TEXT + 1)}, "invalid_field"),
                ({"type": "message", "text": "nul \x00"}, "invalid_field"),
                ({"type": "message", "text": "ok", "id": "../../x"}, "invalid_field"),
                ({"type": "message", "text": 5}, "invalid_field"),
                ({"type": "end"}, "nothing_to_end"),
            ]
            for frame, code in more:
                before = len(visitor.of("error"))
                await visitor.send(frame)
                error = await visitor.wait(lambda f, n=before: len(visitor.of("error")) > n)
                assert error["code"] == code, (frame, error)
            assert visitor.of("message") == []  # nothing of it was stored
            await visitor.send({"type": "message", "id": "fine", "text": "now a real one"})
            await visitor.wait(lambda f: f.get("id") == "w-fine")
            # A frame over the server's limit closes the socket with 1009.
            await visitor.send(json.dumps({"type": "message", "text": "x" * 70_000}))
            await wait_for(lambda: visitor._reader.done(), 10)
            assert visitor.socket.close_code == 1009


async def test_the_widget_and_its_demo_page_are_served(api):
    widget = await api.client.get("/widget.js")
    assert widget.status_code == 200
    assert widget.headers["content-type"].startswith("text/javascript")
    assert "/webchat/" in widget.text and "textContent" in widget.text
    page = await api.client.get("/chat-demo")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'tag.src = "/widget.js"' in page.text
