"""Issue 17, finding 5: an anonymous client cannot flood a tenant's web chat. Handshakes
and new visitors (conversations a client may open) are limited per client address and
per tenant; a client making up a new visitor id per connection is stopped (close 1013),
another address or tenant is not; X-Forwarded-For names the client only when the peer
is a trusted proxy."""

from __future__ import annotations

import contextlib
import secrets

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.app_support import prepare_database
from tests.server_support import LiveServer, live_server, spawned_server
from tests.support import wait_for
from tests.test_webchat import SHOP, Visitor, set_up, webchat_url

LOCAL = ("127.0.0.1/32",)  # the test's own address: a trusted proxy in front of itself


@contextlib.asynccontextmanager
async def chat(server: LiveServer, address: str | None, visitor: str, tenant: str = "acme"):
    headers = {"X-Forwarded-For": address} if address else {}
    async with connect(
        webchat_url(server, tenant), origin=SHOP, additional_headers=headers
    ) as socket:
        client = Visitor(socket, visitor)
        await client.send({"type": "hello", "visitor": visitor})
        yield client


async def introduced(client: Visitor) -> bool:
    """The hello was taken (a `status` frame) or the socket closed (False)."""
    await wait_for(lambda: client.of("status") or client.socket.close_code is not None)
    return client.socket.close_code is None


def new_id() -> str:
    return secrets.token_hex(16)


async def handshake(server: LiveServer, address: str | None, tenant: str = "acme") -> int:
    headers = {"X-Forwarded-For": address} if address else {}
    try:
        async with connect(webchat_url(server, tenant), origin=SHOP, additional_headers=headers):
            return 101
    except InvalidStatus as refused:
        assert refused.response.status_code != 429 or refused.response.headers["Retry-After"]
        return refused.response.status_code


async def test_handshakes_are_limited_per_address_behind_a_trusted_proxy(backend, tmp_path):
    changes = {"webchat_handshakes_per_minute": 3, "trusted_proxies": LOCAL}
    async with live_server(backend, tmp_path, settings_changes=changes) as server:
        await set_up(server)
        assert [await handshake(server, "203.0.113.1") for _ in range(4)] == [101] * 3 + [429]
        assert await handshake(server, "203.0.113.2") == 101  # another address
        # what the client wrote left of the proxy's entry is not believed
        assert await handshake(server, "203.0.113.2, 203.0.113.1") == 429


async def test_forwarded_for_is_ignored_from_an_untrusted_peer(backend, tmp_path):
    async with live_server(
        backend, tmp_path, settings_changes={"webchat_handshakes_per_minute": 3}
    ) as server:
        await set_up(server)
        statuses = [await handshake(server, f"203.0.113.{n}") for n in range(4)]
        assert statuses == [101] * 3 + [429]


@pytest.mark.parametrize("scope", ["address", "tenant"])
async def test_a_client_making_up_visitors_is_stopped(backend, tmp_path, scope):
    changes = {
        "trusted_proxies": LOCAL,
        "webchat_conversations_per_hour": 2 if scope == "address" else 100,
        "webchat_tenant_conversations_per_hour": 100 if scope == "address" else 2,
    }
    async with live_server(backend, tmp_path, settings_changes=changes) as server:
        await set_up(server)
        admin = server.api.auth("admin", tenant="globex")
        response = await server.api.client.put(
            "/api/v1/tenant", json={"widget_origins": [SHOP]}, headers=admin
        )
        assert response.status_code == 200, response.text
        first = new_id()
        for visitor in (first, first, new_id()):  # a reconnect is not a new visitor
            async with chat(server, "203.0.113.1", visitor) as client:
                assert await introduced(client)
        async with chat(server, "203.0.113.1", new_id()) as client:
            assert not await introduced(client)
            assert client.socket.close_code == 1013
        other = "203.0.113.2"
        async with chat(server, other, new_id()) as client:
            assert await introduced(client) == (scope == "address")
        async with chat(server, other, new_id(), tenant="globex") as client:
            assert await introduced(client), "another tenant was held to this one's limit"


async def put_limits(server: LiveServer, tenant: str, limits: dict) -> None:
    """The tenant embeds the widget on SHOP, with web chat limits of its own."""
    body = {"widget_origins": [SHOP], "webchat_limits": limits}
    admin = server.api.auth("admin", tenant=tenant)
    response = await server.api.client.put("/api/v1/tenant", json=body, headers=admin)
    assert response.status_code == 200, response.text
    in_force = response.json()["webchat_limits"]
    assert all(in_force[name] == value for name, value in limits.items() if value), in_force


async def test_a_tenant_is_held_to_its_own_conversations_limit(backend, tmp_path):
    changes = {"trusted_proxies": LOCAL}
    async with live_server(backend, tmp_path, settings_changes=changes) as server:
        await set_up(server)
        await put_limits(server, "acme", {"conversations_per_hour": 2})
        await put_limits(server, "globex", {})  # the server's: 30 per address
        for _ in range(2):
            async with chat(server, "203.0.113.1", new_id()) as client:
                assert await introduced(client)
        async with chat(server, "203.0.113.1", new_id()) as client:
            assert not await introduced(client)
            assert client.socket.close_code == 1013
        for _ in range(3):
            async with chat(server, "203.0.113.1", new_id(), tenant="globex") as client:
                assert await introduced(client), "globex was held to acme's limit"
        # set back to the server's: acme takes the third at once
        await put_limits(server, "acme", {"conversations_per_hour": None})
        async with chat(server, "203.0.113.1", new_id()) as client:
            assert await introduced(client)


async def test_a_tenant_raises_or_lowers_its_handshake_limit(backend, tmp_path):
    changes = {"trusted_proxies": LOCAL, "webchat_handshakes_per_minute": 3}
    async with live_server(backend, tmp_path, settings_changes=changes) as server:
        await set_up(server)
        await put_limits(server, "acme", {"handshakes_per_minute": 6})
        await put_limits(server, "globex", {"handshakes_per_minute": 1})
        address = "203.0.113.1"
        assert [await handshake(server, address) for _ in range(7)] == [101] * 6 + [429]
        statuses = [await handshake(server, address, "globex") for _ in range(2)]
        assert statuses == [101, 429]  # (handshake() checks the 429's Retry-After)
        # per tenant and address: another address still gets the tenant's own
        assert [await handshake(server, "203.0.113.2") for _ in range(7)] == [101] * 6 + [429]
        # names of no tenant are held to the server's limit per address
        assert [await handshake(server, address, "nosuch") for _ in range(4)] == [404] * 3 + [429]


async def test_a_tenant_s_new_limit_reaches_every_process_by_the_bus(backend, tmp_path):
    """Each process keeps the tenant's row (origins, limits) in a cache: the settings
    news of a change on one process makes the other read it again."""
    if backend.name != "postgresql-redis":
        pytest.skip("several processes share PostgreSQL and Redis")
    await prepare_database(backend.database_url)
    env = {"SWITCHBOARD_TRUSTED_PROXIES": LOCAL[0]}
    data = tmp_path / "data"
    async with (
        spawned_server(backend, data, env=env) as one,
        spawned_server(backend, data, env=env) as two,
    ):
        await set_up(one)
        assert [await handshake(two, "203.0.113.1") for _ in range(2)] == [101, 101]  # cached
        await put_limits(one, "acme", {"handshakes_per_minute": 1})
        addresses = (f"203.0.113.{n}" for n in range(2, 250))

        async def refused_at_the_second() -> bool:
            address = next(addresses)
            return [await handshake(two, address) for _ in range(2)] == [101, 429]

        await wait_for(refused_at_the_second, 10, 0.05, "the other process took the change")


async def test_a_visitor_flooding_frames_is_refused_then_closed(backend, tmp_path):
    async with live_server(backend, tmp_path) as server:
        await set_up(server)
        async with chat(server, None, new_id()) as client:
            assert await introduced(client)
            for _ in range(100):
                try:
                    await client.send({"type": "end"})
                except ConnectionClosed:
                    break
            limited = await client.wait(lambda f: f.get("code") == "rate_limited")
            assert limited["retry_after"] > 0
            await wait_for(lambda: client.socket.close_code is not None)
            assert client.socket.close_code == 1008
