"""Relative filters change membership as time passes: at the tenant's midnight for
`today`/`yesterday`, continuously for `last_*`. With an injected clock, subscribers
get those removals and entries the moment the clock crosses the boundary."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tests.server_support import live_server
from tests.support import ManualClock

# 22:59:50 UTC is 23:59:50 in Europe/Madrid (the test tenant's zone, UTC+1 in November).
BEFORE_MIDNIGHT = datetime(2026, 11, 24, 22, 59, 50, tzinfo=UTC)


def created(api, conversation_id: str, at: datetime) -> dict:
    return api.event(
        "conversation.created",
        conversation_id,
        at.isoformat().replace("+00:00", "Z"),
        channel="chat",
        contact=f"visitor-{conversation_id}",
        customer={"name": conversation_id},
    )


async def test_today_and_yesterday_turn_over_at_the_tenants_midnight(backend, tmp_path):
    clock = ManualClock(BEFORE_MIDNIGHT)
    async with live_server(backend, tmp_path, clock=clock) as server:
        api = server.api
        await api.post_events(
            [
                created(api, "late-evening", BEFORE_MIDNIGHT - timedelta(hours=1)),
                created(api, "two-days-ago", BEFORE_MIDNIGHT - timedelta(days=1)),
            ]
        )
        async with server.ws() as ws:
            today = await ws.request(
                {
                    "type": "subscribe",
                    "limit": 10,
                    "view": {
                        "filters": [{"field": "created_at", "op": "within", "value": "today"}]
                    },
                }
            )
            yesterday = await ws.request(
                {
                    "type": "subscribe",
                    "limit": 10,
                    "view": {
                        "filters": [{"field": "created_date", "op": "within", "value": "yesterday"}]
                    },
                }
            )
            assert [row["id"] for row in today["rows"]] == ["late-evening"]
            assert [row["id"] for row in yesterday["rows"]] == ["two-days-ago"]

            clock.advance(timedelta(seconds=20))  # 00:00:10 in Madrid

            moved_out = await ws.wait(
                lambda f: f.get("sub") == today["sub"] and f["type"] == "delta"
            )
            assert moved_out["remove"] == ["late-evening"] and moved_out["total"] == 0
            moved_in = await ws.wait(
                lambda f: f.get("sub") == yesterday["sub"] and f["type"] == "delta"
            )
            assert [row["id"] for row in moved_in["upsert"]] == ["late-evening"]
            assert moved_in["remove"] == ["two-days-ago"]
            assert moved_in["total"] == 1


async def test_last_hour_drops_a_row_when_it_turns_an_hour_old(backend, tmp_path):
    clock = ManualClock(BEFORE_MIDNIGHT)
    async with live_server(backend, tmp_path, clock=clock) as server:
        api = server.api
        await api.post_events(
            [
                created(api, "older", BEFORE_MIDNIGHT - timedelta(minutes=59, seconds=55)),
                created(api, "newer", BEFORE_MIDNIGHT - timedelta(minutes=30)),
            ]
        )
        async with server.ws() as ws:
            view = await ws.request(
                {
                    "type": "subscribe",
                    "limit": 10,
                    "view": {
                        "filters": [{"field": "created_at", "op": "within", "value": "last_1h"}]
                    },
                }
            )
            assert [row["id"] for row in view["rows"]] == ["newer", "older"]

            clock.advance(timedelta(seconds=3))
            clock.advance(timedelta(seconds=3))  # "older" is now an hour and a second old

            delta = await ws.wait(lambda f: f.get("sub") == view["sub"] and f["type"] == "delta")
            assert delta["remove"] == ["older"] and delta["total"] == 1
            assert delta["seq"] == 1
