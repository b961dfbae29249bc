"""The supervisor's pages in real Chromium: the views list, a live view, the filter
builder, recordings and hover-to-initiate."""

from __future__ import annotations

import pytest

from tests.browser_support import opened
from tests.page_support import arrive, post, saved_view
from tests.server_support import live_server

pytestmark = pytest.mark.browser


async def test_a_posted_event_shows_in_the_open_view(browser, sqlite_backend, tmp_path):
    async with live_server(sqlite_backend, tmp_path / "data") as server:
        view = await saved_view(server.api)
        first = await arrive(server.api)
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, f"/views/{view['id']}") as page:
            table = page.locator(f"table[data-view='{view['id']}']")
            await table.locator(f"tr[data-id='{first}']").wait_for()
            assert "token=" not in page.url  # dropped from the address bar
            await page.locator("[data-connection='live']").wait_for()

            second = await arrive(server.api, name="Zoë Ålander")
            row = table.locator(f"tr[data-id='{second}']")
            await row.wait_for()
            await page.wait_for_function(
                "() => document.querySelector('[data-total]').textContent === '2'"
            )
            assert await row.locator("td[data-column='customer_name']").text_content() == (
                "Zoë Ålander"
            )
            await post(server.api, second, "routing.enqueued", team="sales")
            status = row.locator("td[data-column='status']")
            await page.wait_for_function(
                "id => document.querySelector(`tr[data-id='${id}'] td[data-column='status']`)"
                ".textContent === 'Queued'",
                arg=second,
            )
            assert await row.get_attribute("data-version") == "2"
            assert await status.text_content() == "Queued"
            assert page.problems.errors == []
