"""Issue 17, findings 3 and 4: one socket cannot stall the process or exhaust it.

* A socket pipelining a thousand subscribes in one write is handled fairly with
  everyone else: an HTTP request and another socket's subscribe are answered while
  its frames are still being handled (asserted by order: subscription ids are given
  out in the order subscribes are handled, and /metrics counts live subscriptions).
* A token bucket per connection weighs frames by what they ask (`rate_limited`), a
  connection that keeps on is closed with 1008, and subscriptions per connection are
  capped (`too_many_subscriptions`).
* Live windows are accounted in bytes against a budget: idle windows are evicted
  first, then a subscribe is refused `over_capacity` while existing ones go on, and
  the bytes come back when the sockets close.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from server.live import windows as live
from tests.app_support import prepare_database
from tests.server_support import live_server, spawned_server
from tests.support import wait_for

FLOOD = 1000
VIEW = {"filters": []}  # every conversation, the default columns
CHAT = {"filters": [{"field": "channel", "op": "eq", "value": "chat"}]}


def created(n: int) -> dict:
    return {
        "event_id": f"c{n}",
        "type": "conversation.created",
        "conversation_id": f"k{n}",
        "occurred_at": f"2026-11-24T10:{n // 60:02d}:{n % 60:02d}Z",
        "data": {"channel": "chat", "contact": f"v{n}", "customer": {"name": f"N{n}"}},
    }


def number(sub: str) -> int:
    return int(sub.removeprefix("s"))


async def test_a_pipelining_socket_does_not_hold_up_others(backend, tmp_path):
    limits = {"SWITCHBOARD_WS_FRAME_BURST": "1000000", "SWITCHBOARD_WS_MAX_SUBSCRIPTIONS": "100000"}
    await prepare_database(backend.database_url)
    async with spawned_server(backend, tmp_path, env=limits) as server:
        async with server.ws() as flooder, server.ws(user="sup2") as honest:
            first = await flooder.request({"type": "subscribe", "view": VIEW, "limit": 0})
            await honest.request({"type": "ping"})
            port = int(server.url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            # A thousand count-only subscribes of the same window in one write (one read
            # of the server's): each is quick, so without yielding they run back to back.
            # Right behind them, with no wait between the writes: the honest socket's
            # subscribe and an HTTP request for /metrics.
            write(flooder, [{"type": "subscribe", "view": VIEW, "limit": 0}] * FLOOD)
            write(honest, [{"type": "subscribe", "view": CHAT, "limit": 0, "ref": "h"}])
            writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            metrics = (await reader.read()).decode()
            writer.close()
            answer = await honest.wait(lambda f: f.get("ref") == "h")
            await wait_for(lambda: len(snapshots(flooder)) == FLOOD + 1, 30)
            assert first in flooder.frames
            last = max(number(f["sub"]) for f in snapshots(flooder))
            assert number(answer["sub"]) < last, "the honest subscribe waited for the flood"
            held = _gauge(metrics, "switchboard_live_subscriptions")
            assert held < FLOOD + 1, f"/metrics waited for the flood ({held} subscriptions)"


def write(client, frames: list[dict]) -> None:
    """Frames in one write to the socket, at once (no await: nothing runs between)."""
    protocol = client.socket.protocol
    for frame in frames:
        protocol.send_text(json.dumps(frame).encode())
    client.socket.transport.write(b"".join(protocol.data_to_send()))


def snapshots(client) -> list[dict]:
    return [f for f in client.frames if f.get("type") == "snapshot"]


def _gauge(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def test_rate_limited_frames_are_refused_and_a_flooder_closed(backend, tmp_path):
    changes = {"ws_frame_burst": 100.0, "ws_frame_rate": 1.0, "ws_max_subscriptions": 3}
    async with live_server(backend, tmp_path, settings_changes=changes) as server:
        await server.api.post_events([created(n) for n in range(3)])
        async with server.ws() as client, server.ws(user="sup2") as other:
            # 1,000-row windows cost 21 units each: the fifth is over the 100 at once
            answers = [
                await client.request({"type": "subscribe", "view": VIEW, "limit": 1000})
                for _ in range(3)
            ]
            assert [a["type"] for a in answers] == ["snapshot"] * 3
            capped = await client.request({"type": "subscribe", "view": CHAT, "limit": 0})
            assert capped["type"] == "error" and capped["code"] == "too_many_subscriptions"
            fetch = {"type": "fetch", "sub": answers[0]["sub"], "limit": 1000}
            assert (await client.request(fetch))["type"] == "page"
            refused = await client.request(fetch)
            assert refused["type"] == "error" and refused["code"] == "rate_limited", refused
            assert refused["retry_after_s"] > 0
            # another connection has a bucket of its own
            assert (await other.request({"type": "ping"}))["type"] == "pong"
            # who keeps on past the refusals is closed with 1008
            for _ in range(200):
                try:
                    await client.send({"type": "subscribe", "view": VIEW, "limit": 1000})
                except ConnectionClosed:
                    break
            await wait_for(lambda: client.socket.close_code is not None)
            assert client.socket.close_code == 1008
            assert (await other.request({"type": "ping"}))["type"] == "pong"


async def test_a_client_that_waits_as_told_is_never_closed(backend, tmp_path):
    changes = {"ws_frame_burst": 25.0, "ws_frame_rate": 50.0}
    async with live_server(backend, tmp_path, settings_changes=changes) as server:
        async with server.ws() as client:
            refusals = 0
            for n in range(8):  # 1,000-row windows: 21 units each, one in the bucket
                while True:
                    answer = await client.request(
                        {"type": "subscribe", "view": every(n), "limit": 1000}
                    )
                    if answer["type"] != "error":
                        break
                    assert answer["code"] == "rate_limited", answer
                    refusals += 1
                    # the behaviour under test: a client waits the time it is told
                    await asyncio.sleep(answer["retry_after_s"])
            assert refusals >= 7 and client.socket.close_code is None


def every(n: int) -> dict:
    """A view of every conversation, distinct for each n (a window of its own)."""
    return {"filters": [{"field": "created_at", "op": "gt", "value": f"2020-01-01T00:00:{n:02d}Z"}]}


async def test_windows_are_held_to_a_memory_budget(backend, tmp_path, monkeypatch):
    monkeypatch.setattr(live, "IDLE_WINDOW_S", 0.5)
    async with live_server(backend, tmp_path) as server:
        views = server.services.live
        await server.api.post_events([created(n) for n in range(60)])
        async with server.ws() as client:
            held = await client.request({"type": "subscribe", "view": every(1), "limit": 50})
            one = await client.request({"type": "subscribe", "view": every(2), "limit": 50})
            assert len(views.windows) == 2
            size = max(window.bytes for window in views.windows.values())
            assert size > 60 * 500 and views.accounted >= 2 * size - 1000
            await client.request({"type": "unsubscribe", "sub": one["sub"]})
            # room for two windows and a bit: the idle one must go for a third
            views.memory_budget = views.accounted * 5 // 4
            third = await client.request({"type": "subscribe", "view": every(3), "limit": 50})
            assert third["type"] == "snapshot", "the idle window was not evicted to make room"
            assert views.evictions == 1 and len(views.windows) == 2
            refused = await client.request({"type": "subscribe", "view": every(4), "limit": 50})
            assert refused["type"] == "error" and refused["code"] == "over_capacity", refused
            assert refused["retry_after_s"] > 0
            # a count-only subscription still fits; the existing ones go on
            count = await client.request({"type": "subscribe", "view": every(5), "limit": 0})
            assert count["type"] == "snapshot"
            await server.api.post_events([created(100)])
            for sub in (held["sub"], third["sub"]):
                await client.wait(lambda f, sub=sub: f.get("type") == "delta" and f["sub"] == sub)
            metrics = (await server.api.client.get("/metrics")).text
            assert _gauge(metrics, "switchboard_live_window_bytes") == views.accounted
            assert _gauge(metrics, "switchboard_live_over_capacity_total") >= 1
        # given back when the socket closes (idle windows kept IDLE_WINDOW_S at most)
        await wait_for(lambda: views.accounted == 0 and not views.windows, 5)


async def test_a_reconnect_does_not_refill_the_users_row_bucket(backend, tmp_path):
    # rows asked per user, over all its connections: two 1,000-row windows at once
    changes = {"ws_user_rows_burst": 2000.0, "ws_user_rows_rate": 1.0}
    async with live_server(backend, tmp_path, settings_changes=changes) as server:
        await server.api.post_events([created(n) for n in range(3)])
        async with server.ws() as first:
            for n in range(2):
                answer = await first.request({"type": "subscribe", "view": every(n), "limit": 1000})
                assert answer["type"] == "snapshot", answer
        async with server.ws() as again, server.ws(user="sup2") as colleague:
            refused = await again.request({"type": "subscribe", "view": every(2), "limit": 1000})
            assert refused["type"] == "error" and refused["code"] == "rate_limited", refused
            assert refused["retry_after_s"] > 0
            # what costs no rows still passes, and another user has a bucket of its own
            count = await again.request({"type": "subscribe", "view": every(2), "limit": 0})
            assert count["type"] == "snapshot", count
            answer = await colleague.request({"type": "subscribe", "view": every(3), "limit": 1000})
            assert answer["type"] == "snapshot", answer


async def test_a_peer_that_sends_on_after_the_close_is_cut(backend, tmp_path):
    """A flooder that never reads is closed with 1008; whatever it sends after our
    close frame is not read (parsed) for the closing timeout but cut after a little."""
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    changes = {"ws_frame_burst": 100.0, "ws_frame_rate": 1.0}
    async with live_server(backend, tmp_path, settings_changes=changes) as server:
        client = ClientProtocol(parse_uri(server.ws_url), subprotocols=["switchboard.v1.json"])
        request = client.connect()
        request.headers["Authorization"] = f"Bearer {server.api.token('supervisor', 'sup1')}"
        client.send_request(request)
        port = int(server.url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(client.data_to_send()))
        while client.handshake_exc is None and not client.events_received():
            client.receive_data(await reader.read(65536))
        assert client.handshake_exc is None
        # past the bucket and the refusals: closed with 1008 (never read by us)
        for _ in range(1000):
            client.send_text(b'{"type": "ping"}')
        writer.write(b"".join(client.data_to_send()))
        sent = 0
        pad = json.dumps({"type": "ping", "pad": "x" * 30_000}).encode()
        try:
            while sent < 256 << 20:  # without the cut, all of it would be taken
                client.send_text(pad)
                writer.write(b"".join(client.data_to_send()))
                await writer.drain()
                sent += len(pad)
        except (ConnectionResetError, BrokenPipeError):
            pass
        assert sent < 64 << 20, f"{sent} bytes taken after the close"
        writer.close()


async def test_a_user_closed_for_flooding_again_and_again_is_held_back(backend, tmp_path):
    changes = {"ws_frame_burst": 5.0, "ws_frame_rate": 1.0}
    async with live_server(backend, tmp_path, settings_changes=changes) as server:
        for _ in range(3):  # three closes for flooding are forgiven
            async with server.ws() as flooder:
                for _ in range(200):
                    try:
                        await flooder.send({"type": "ping"})
                    except ConnectionClosed:
                        break
                await wait_for(lambda flooder=flooder: flooder.socket.close_code is not None)
                assert flooder.socket.close_code == 1008
        with pytest.raises(InvalidStatus) as refused:
            async with server.ws():
                pass
        assert refused.value.response.status_code == 429
        assert int(refused.value.response.headers["retry-after"]) >= 1
        async with server.ws(user="sup2") as colleague:  # another user is not held back
            assert (await colleague.request({"type": "ping"}))["type"] == "pong"
