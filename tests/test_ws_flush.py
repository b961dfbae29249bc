"""How live changes are flushed (docs/websocket-server.md, "Push interval and flushes"):
leading-edge (a change after a quiet interval goes out at once, not one interval
later), and a window's fan-out written in slices with the loop free in between,
without breaking `seq` or losing a row."""

from __future__ import annotations

import contextlib

import pytest

from server.core.settings import Settings
from server.live import windows as live
from tests.server_support import live_server
from tests.test_ws_protocol import contiguous, created, deltas, post, subscribe

VIEW = {"filters": [{"field": "channel", "op": "in", "value": ["chat"]}], "columns": ["status"]}


async def test_a_change_after_a_quiet_interval_is_pushed_at_once(backend, tmp_path):
    # An interval of a minute: a trailing timer would hold the delta past the wait.
    async with (
        live_server(backend, tmp_path, settings_changes={"push_interval_s": 60.0}) as server,
        server.ws() as client,
    ):
        snapshot = await subscribe(client, VIEW)
        await post(server.api, [created(server.api, "c1", 1)])
        delta = await client.wait(
            lambda f: f.get("type") == "delta" and f["sub"] == snapshot["sub"], timeout=10
        )
        assert [row["id"] for row in delta["upsert"]] == ["c1"]


async def test_a_sliced_fan_out_keeps_seq_and_every_row(backend, tmp_path, monkeypatch):
    monkeypatch.setattr(live, "FANOUT_SLICE", 1)  # yield to the loop after every subscriber
    async with live_server(backend, tmp_path) as server, contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(server.ws()) for _ in range(4)]
        subs = [(await subscribe(client, VIEW))["sub"] for client in clients]
        for n in range(5):
            await post(server.api, [created(server.api, f"c{n}", n)])
        leaving, leaving_sub = clients[3], subs[3]
        await leaving.request({"type": "unsubscribe", "sub": leaving_sub})
        gone_after = len(deltas(leaving, leaving_sub))
        await post(server.api, [created(server.api, "last", 9)])
        for client, sub in zip(clients[:3], subs[:3], strict=True):
            await client.wait(
                lambda f, sub=sub: (
                    f.get("type") == "delta"
                    and f["sub"] == sub
                    and any(row["id"] == "last" for row in f["upsert"])
                )
            )
            got = {row["id"] for delta in deltas(client, sub) for row in delta["upsert"]}
            assert got == {"c0", "c1", "c2", "c3", "c4", "last"}
            assert contiguous(client, sub)
        # A ping answered after the others got "last": nothing more came for the
        # subscription that ended before it.
        await leaving.request({"type": "ping"})
        assert len(deltas(leaving, leaving_sub)) == gone_after


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "60001"])
def test_a_bad_push_interval_is_refused_by_name(value, tmp_path):
    env = {"SWITCHBOARD_DATA_DIR": str(tmp_path), "SWITCHBOARD_PUSH_INTERVAL_MS": value}
    with pytest.raises(ValueError, match="SWITCHBOARD_PUSH_INTERVAL_MS"):
        Settings.from_env(env)


def test_the_push_interval_is_read_in_milliseconds(tmp_path):
    env = {"SWITCHBOARD_DATA_DIR": str(tmp_path), "SWITCHBOARD_PUSH_INTERVAL_MS": "5"}
    assert Settings.from_env(env).push_interval_s == 0.005
    assert Settings.from_env({"SWITCHBOARD_DATA_DIR": str(tmp_path)}).push_interval_s == 0.02
