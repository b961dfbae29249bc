"""The agent console, the wallboard and recovery, in real Chromium: a popup arrives
and accepting it turns the row active in a supervisor's view; the wallboard changes;
a view recovers by itself after its server restarts."""

from __future__ import annotations

import contextlib
import os
import signal

from tests.app_support import prepare_database
from tests.browser_support import BROWSER_TESTS, opened, text_is
from tests.page_support import arrive, post, saved_view
from tests.routing_support import arrive as arrive_for_team
from tests.routing_support import builtin_routing, put_agent, put_team
from tests.server_support import live_server, spawned_server
from tests.support import free_port, wait_for

pytestmark = BROWSER_TESTS


async def test_a_popup_arrives_and_accepting_it_turns_the_row_active_for_a_supervisor(
    browser, backend, tmp_path
):
    async with live_server(backend, tmp_path / "data") as server:
        api = server.api
        await builtin_routing(api)
        await put_team(api, "sales", offer_timeout_s=120)
        await put_agent(api, "a1", ["sales"])
        view = await saved_view(api, columns=["id", "status", "agent_id"])
        sup_token = api.token("supervisor", "sup1")
        agent_token = api.token("agent", "a1")
        async with (
            opened(browser, server.url, agent_token, "/agent") as agent,
            opened(browser, server.url, sup_token, f"/views/{view['id']}") as supervisor,
        ):
            await agent.locator("[data-connection='live']").wait_for()
            await agent.get_by_label("I am").select_option("available")
            await wait_presence(api, "a1", "available")

            cid = await arrive_for_team(api, "sales", channel="chat")
            popup = agent.locator("[data-offer]")
            await popup.wait_for()
            assert f"Customer {cid}" in await popup.text_content()
            assert (await popup.locator(".countdown").text_content()).endswith("s")
            status = f"tr[data-id='{cid}'] td[data-column='status']"
            await supervisor.wait_for_function(text_is(status, "Offered"))

            await popup.get_by_role("button", name="Accept").click()
            await supervisor.wait_for_function(text_is(status, "Active"))
            await popup.wait_for(state="detached")
            assert (
                await supervisor.locator(
                    f"tr[data-id='{cid}'] td[data-column='agent_id']"
                ).text_content()
                == "a1"
            )
            # The accepted chat opens in the console: reply, end it, wrap it up.
            await agent.get_by_label("Reply").fill("Hello, how can I help?")
            await agent.get_by_role("button", name="Send").click()
            await agent.locator("ol.transcript li.agent", has_text="how can I help").wait_for()
            await post(api, cid, "media.hangup", source="customer")
            await agent.get_by_label("Disposition").select_option("resolved")
            await agent.get_by_label("Note").fill("sorted")
            await agent.get_by_role("button", name="Submit wrap-up").click()
            await supervisor.wait_for_function(text_is(status, "Closed"))
            detail = await api.conversation(cid)
            assert detail["conversation"]["disposition"] == "resolved"
            assert agent.problems.errors == [] and supervisor.problems.errors == []


async def wait_presence(api, agent_id: str, presence: str) -> None:
    async def reached():
        response = await api.client.get("/api/v1/me", headers=api.auth("agent", agent_id))
        return response.json()["presence"] == presence

    await wait_for(reached, 10)


async def test_the_wallboard_changes(browser, backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        first = await arrive(server.api, "call")
        await post(server.api, first, "routing.enqueued", team="sales")
        token = server.api.token("wallboard", "wall1")
        async with opened(browser, server.url, token, "/wallboard") as page:
            waiting = "[data-team='sales'] [data-metric='waiting'] .value"
            await page.wait_for_function(text_is(waiting, "1"))
            second = await arrive(server.api, "chat")
            await post(server.api, second, "routing.enqueued", team="sales")
            await page.wait_for_function(text_is(waiting, "2"))
            await post(server.api, first, "media.customer_dropped")
            await page.wait_for_function(text_is(waiting, "1"))
            abandon = "[data-team='sales'] [data-metric='abandon_rate'] .value"
            await page.wait_for_function(text_is(abandon, "100%"))
            assert page.problems.errors == []


async def test_the_view_recovers_by_itself_after_the_server_restarts(browser, backend, tmp_path):
    await prepare_database(backend.database_url)
    port = free_port()
    data = tmp_path / "data"
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(spawned_server(backend, data, port=port))
        view = await saved_view(first.api)
        before = await arrive(first.api)
        page = await stack.enter_async_context(
            opened(
                browser, first.url, first.api.token("supervisor", "sup1"), f"/views/{view['id']}"
            )
        )
        await page.locator(f"tr[data-id='{before}']").wait_for()
        await page.locator("[data-connection='live']").wait_for()

        os.kill(first.pid, signal.SIGKILL)
        await page.locator(
            "[data-connection='reconnecting'], [data-connection='offline']"
        ).wait_for()

        async with spawned_server(backend, data, port=port) as second:
            after = await arrive(second.api, name="After the restart")
            await page.locator(f"tr[data-id='{after}']").wait_for(timeout=30000)
            await page.locator("[data-connection='live']").wait_for()
            assert await page.locator(f"tr[data-id='{before}']").count() == 1
            assert await page.locator("[data-total]").text_content() == "2"
