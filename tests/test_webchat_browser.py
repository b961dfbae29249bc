"""The chat widget in real headless Chromium: /chat-demo embeds /widget.js, a visitor
chats, the agent's reply shows, and markup in either direction shows as text.

Runs on both backends, with the module's Chromium (tests/browser_support.py): skipped
without it, failed with SWITCHBOARD_REQUIRE_SERVICES=1.
Set SWITCHBOARD_SCREENSHOTS=<dir> to keep the page's screenshot there.
"""

from __future__ import annotations

import os
from pathlib import Path

from server.providers import repository as crepo
from server.providers import webchat
from tests.browser_support import BROWSER_TESTS, opened
from tests.server_support import live_server
from tests.support import Backend, wait_for
from tests.test_webchat import agent_reply, route_to, set_up

pytestmark = BROWSER_TESTS


async def test_a_visitor_chats_through_the_widget_on_the_demo_page(
    backend: Backend, tmp_path, browser
):
    async with live_server(backend, tmp_path / "data") as server:
        await set_up(server, origin=server.url)  # the page is served by the server itself
        async with opened(
            browser,
            server.url,
            path="/chat-demo?tenant=acme&team=support",
            viewport={"width": 1100, "height": 720},
        ) as page:
            await page.click('[data-webchat="launcher"]')
            await page.wait_for_selector('[data-webchat="status"][data-status="ready"]')
            host = page.locator("[data-switchboard-widget]")
            assert await host.get_attribute("data-connection") == "live"

            markup = '<img src=x onerror="window.pwned = 1">Where is my order?'
            await page.fill('[data-webchat="input"]', markup)
            await page.press('[data-webchat="input"]', "Enter")
            mine = page.locator('li[data-sender="customer"]:not([data-pending])')
            await mine.wait_for()
            assert (await mine.inner_text()).startswith(markup)
            await page.wait_for_selector('[data-webchat="status"][data-status="new"]')

            visitor = await page.evaluate("localStorage.getItem('switchboard-webchat:acme')")
            contact = webchat.visitor_contact("acme", visitor)

            async def conversation_id():
                async with server.services.db.read() as conn:
                    row = await crepo.latest_conversation_of_contact(conn, "acme", contact, "chat")
                return row and row["id"]

            cid = await wait_for(conversation_id, 10)
            await route_to(server, cid)
            status = page.locator('[data-webchat="status"][data-status="active"]')
            await status.wait_for()
            assert "Agent a1" in await status.inner_text()

            await agent_reply(server, cid, "Let me check, <b>one moment</b> please.")
            theirs = page.locator('li[data-sender="agent"]')
            await theirs.wait_for()
            assert (await theirs.inner_text()).startswith("Let me check, <b>one moment</b> please.")

            log = page.locator('[data-webchat="log"]')
            assert await log.locator("img, b, script").count() == 0
            assert await page.evaluate("window.pwned") is None
            assert page.problems.errors == []

            shots = os.environ.get("SWITCHBOARD_SCREENSHOTS")
            target = Path(shots) if shots else tmp_path
            target.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(target / "chat-demo.png"))
