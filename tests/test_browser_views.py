"""The supervisor's pages in real Chromium: the views list, a live view, the filter
builder, recordings and hover-to-initiate."""

from __future__ import annotations

import asyncio
import contextlib

from tests.browser_support import BROWSER_TESTS, held_requests, opened, text_is
from tests.page_support import arrive, post, saved_view
from tests.server_support import live_server
from tests.support import wait_for

pytestmark = BROWSER_TESTS


async def test_a_posted_event_shows_in_the_open_view(browser, backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
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


async def test_a_view_built_with_the_filter_builder_shows_only_matching_rows(
    browser, backend, tmp_path
):
    async with live_server(backend, tmp_path / "data") as server:
        whatsapp = await arrive(server.api, "whatsapp")
        call = await arrive(server.api, "call")
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, "/views") as page:
            await page.get_by_role("button", name="New view").click()
            dialog = page.get_by_role("dialog")
            await dialog.get_by_label("View name").fill("WhatsApp today")
            await dialog.get_by_role("button", name="+ Add condition").click()
            condition = dialog.get_by_role("group", name="Condition", exact=True).nth(0)
            await condition.get_by_label("Field").select_option("channel")
            await condition.get_by_label("Operator").select_option("in")
            await condition.get_by_label("WhatsApp").check()
            await dialog.get_by_role("button", name="+ Add condition").click()
            second = dialog.get_by_role("group", name="Condition", exact=True).nth(1)
            await second.get_by_label("Field").select_option("created_at")
            await second.get_by_label("Operator").select_option("within")
            await second.get_by_label("Relative date").select_option("today")
            await dialog.get_by_role("button", name="Create view").click()

            await page.wait_for_url("**/views/v_*")
            table = page.locator("table[data-view]")
            await table.locator(f"tr[data-id='{whatsapp}']").wait_for()
            assert await table.locator(f"tr[data-id='{call}']").count() == 0
            view_id = await table.get_attribute("data-view")
            response = await server.api.client.get(
                f"/api/v1/views/{view_id}", headers=server.api.auth("supervisor", "sup1")
            )
            assert response.json()["filters"] == [
                {"field": "channel", "op": "in", "value": ["whatsapp"]},
                {"field": "created_at", "op": "within", "value": "today"},
            ]
            # Live, too: the server matches new conversations against the filter.
            another_call = await arrive(server.api, "call")
            another_whatsapp = await arrive(server.api, "whatsapp")
            await table.locator(f"tr[data-id='{another_whatsapp}']").wait_for()
            assert await page.locator("[data-total]").text_content() == "2"
            assert await table.locator(f"tr[data-id='{another_call}']").count() == 0
            assert page.problems.errors == []


async def test_conversation_id_cannot_be_deselected(browser, backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, "/views") as page:
            await page.get_by_role("button", name="New view").click()
            dialog = page.get_by_role("dialog")
            await dialog.get_by_label("View name").fill("Only IDs")
            chooser = dialog.get_by_role("checkbox", name="Conversation ID")
            assert await chooser.is_checked()
            assert await chooser.is_disabled()
            await chooser.click(force=True)  # a click on a disabled box changes nothing
            assert await chooser.is_checked()
            for label in ("Customer Name", "Status", "Conversation state", "Agent Name"):
                await dialog.get_by_role("checkbox", name=label, exact=True).uncheck()
            await dialog.get_by_role("button", name="Create view").click()
            await page.wait_for_url("**/views/v_*")
            headers = page.locator("table[data-view] th")
            await headers.first.wait_for()
            assert await headers.first.text_content() == "Conversation ID"
            assert await headers.first.get_attribute("data-column") == "id"


async def open_editor(page):
    """The view page's editor, opened."""
    await page.get_by_role("button", name="Edit view").click()
    dialog = page.get_by_role("dialog")
    await dialog.wait_for()
    return dialog


async def editor_columns(dialog) -> list[str]:
    """The editor's chosen columns, in the order it shows them."""
    order = dialog.get_by_role("list", name="Shown in this order")
    return await order.get_by_role("listitem").evaluate_all(
        "items => items.map(li => li.dataset.column)"
    )


async def saved_in_order(server, page, view_id: str, columns: list[str]) -> None:
    """Save the open editor: the server's view has `columns` in that order, the live
    table's headers and cells follow it, and the editor opened again shows it."""
    await page.get_by_role("button", name="Save changes").click()
    await page.get_by_role("dialog").wait_for(state="detached")
    response = await server.api.client.get(
        f"/api/v1/views/{view_id}", headers=server.api.auth("supervisor", "sup1")
    )
    assert response.json()["columns"] == columns
    await page.wait_for_function(
        "columns => ['th', 'tbody tr:first-child td'].every(cells =>"
        " [...document.querySelectorAll(`table[data-view] ${cells}`)]"
        ".map(c => c.dataset.column).join() === columns.join())",
        arg=columns,
    )
    dialog = await open_editor(page)
    assert await editor_columns(dialog) == columns
    await page.keyboard.press("Escape")
    await dialog.wait_for(state="detached")


def sort_key(dialog, n: int):
    """The editor's nth sort key: its field select and its direction select."""
    key = dialog.get_by_role("group", name=f"Sort key {n}")
    return key.get_by_role("combobox").first, key.get_by_label("Sort direction")


@contextlib.asynccontextmanager
async def editing_four_columns(browser, backend, tmp_path):
    """A saved view of four columns with a row in it, open in a page with its editor:
    (server, view, page, dialog)."""
    async with live_server(backend, tmp_path / "data") as server:
        view = await saved_view(server.api, columns=["id", "customer_name", "status", "channel"])
        cid = await arrive(server.api)
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, f"/views/{view['id']}") as page:
            await page.locator(f"tr[data-id='{cid}']").wait_for()
            dialog = await open_editor(page)
            assert await editor_columns(dialog) == view["columns"]
            yield server, view, page, dialog


async def test_columns_reordered_with_the_buttons_are_saved_and_shown_in_that_order(
    browser, backend, tmp_path
):
    async with editing_four_columns(browser, backend, tmp_path) as (server, view, page, dialog):
        # By keyboard: focus stays on the moved column, on its other button once
        # it reaches the end.
        await dialog.get_by_role("button", name="Move Customer Name down").focus()
        await page.keyboard.press("Enter")
        await page.keyboard.press("Enter")
        assert await editor_columns(dialog) == ["id", "status", "channel", "customer_name"]
        assert await dialog.get_by_role("button", name="Move Customer Name down").is_disabled()
        focused = await page.evaluate("() => document.activeElement.getAttribute('aria-label')")
        assert focused == "Move Customer Name up"
        await dialog.get_by_role("button", name="Move Channel up").click()
        # Conversation ID stays first: the first column after it goes no higher.
        assert await dialog.get_by_role("button", name="Move Channel up").is_disabled()
        await saved_in_order(server, page, view["id"], ["id", "channel", "status", "customer_name"])
        assert page.problems.errors == []


async def test_columns_reordered_by_drag_and_drop_are_saved_and_shown_in_that_order(
    browser, backend, tmp_path
):
    async with editing_four_columns(browser, backend, tmp_path) as (server, view, page, dialog):
        order = dialog.get_by_role("list", name="Shown in this order")

        def item(column: str):
            return order.locator(f"li[data-column='{column}']")

        # A dropped column takes the place of the one it lands on, up or down.
        await item("channel").drag_to(item("customer_name"))
        assert await editor_columns(dialog) == ["id", "channel", "customer_name", "status"]
        await item("customer_name").drag_to(item("status"))
        assert await editor_columns(dialog) == ["id", "channel", "status", "customer_name"]
        await item("status").drag_to(item("id"))  # nothing goes above Conversation ID
        assert await editor_columns(dialog) == ["id", "channel", "status", "customer_name"]
        await saved_in_order(server, page, view["id"], ["id", "channel", "status", "customer_name"])
        assert page.problems.errors == []


async def test_a_view_sorted_by_two_keys_orders_the_live_table_by_both(browser, backend, tmp_path):
    # The chats tie on the channel: the second key, created_at newest first, orders
    # them against the order of their ids (the tie-break once the keys are equal).
    created = {
        "c-1": ("chat", "10:00:01"),
        "c-2": ("chat", "10:00:02"),
        "c-3": ("call", "10:00:03"),
        "c-4": ("whatsapp", "10:00:00"),
        "c-5": ("chat", "10:00:04"),
    }
    sort = [{"field": "channel", "dir": "asc"}, {"field": "created_at", "dir": "desc"}]
    rows = (
        "() => [...document.querySelectorAll('table[data-view] tbody tr')]"
        ".map(tr => tr.dataset.id).join()"
    )
    async with live_server(backend, tmp_path / "data") as server:
        view = await saved_view(server.api)
        for cid, (channel, time) in created.items():
            await arrive(server.api, channel, cid=cid, at=f"2026-11-20T{time}Z")
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, f"/views/{view['id']}") as page:
            await page.locator("tr[data-id='c-5']").wait_for()
            dialog = await open_editor(page)
            first = dialog.get_by_role("group", name="Sort key 1")
            await first.get_by_label("Sort by", exact=True).select_option("channel")
            await first.get_by_label("Sort direction").select_option("asc")
            await dialog.get_by_role("button", name="+ Then by").click()
            second = dialog.get_by_role("group", name="Sort key 2")
            await second.get_by_label("then by", exact=True).select_option("created_at")
            await second.get_by_label("Sort direction").select_option("desc")
            await dialog.get_by_role("button", name="Save changes").click()
            await dialog.wait_for(state="detached")
            response = await server.api.client.get(
                f"/api/v1/views/{view['id']}", headers=server.api.auth("supervisor", "sup1")
            )
            assert response.json()["sort"] == sort
            await page.wait_for_function(f"ids => ({rows})() === ids", arg="c-3,c-5,c-2,c-1,c-4")
            # Live: a chat arriving between two others takes its place by both keys.
            await arrive(server.api, "chat", cid="c-6", at="2026-11-20T10:00:03Z")
            await page.wait_for_function(
                f"ids => ({rows})() === ids", arg="c-3,c-5,c-6,c-2,c-1,c-4"
            )
            # Opened again, the editor shows both keys.
            dialog = await open_editor(page)
            shown = []
            for n in (1, 2):
                field, direction = sort_key(dialog, n)
                shown.append(
                    {"field": await field.input_value(), "dir": await direction.input_value()}
                )
            assert shown == sort
            assert page.problems.errors == []


async def test_a_sort_field_is_offered_to_one_sort_key_only(browser, backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        schema = await server.api.client.get(
            "/api/v1/view-schema", headers=server.api.auth("supervisor", "sup1")
        )
        sortable = schema.json()["sortable"]
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, "/views") as page:
            await page.get_by_role("button", name="New view").click()
            dialog = page.get_by_role("dialog")
            await dialog.get_by_label("View name").fill("By status")
            add = dialog.get_by_role("button", name="+ Then by")

            def field(n: int):
                return sort_key(dialog, n)[0]

            async def offered(n: int) -> set[str]:
                return set(
                    await field(n).locator("option").evaluate_all("os => os.map(o => o.value)")
                )

            await field(1).select_option("status")
            assert await offered(1) == set(sortable)  # alone, a key may take any field
            await add.click()
            assert await offered(2) == set(sortable) - {"status"}
            await field(2).select_option("channel")
            assert await offered(1) == set(sortable) - {"channel"}
            await add.click()
            assert await offered(3) == set(sortable) - {"status", "channel"}
            assert await add.is_disabled()  # the server takes three keys at most
            # A removed key's field is offered again.
            third = await field(3).input_value()
            await dialog.get_by_role("button", name="Remove sort key 2").click()
            assert await offered(1) == set(sortable) - {third}
            assert await offered(2) == set(sortable) - {"status"}
            assert await add.is_enabled()
            await dialog.get_by_role("button", name="Create view").click()
            await page.wait_for_url("**/views/v_*")
            view_id = await page.locator("table[data-view]").get_attribute("data-view")
            response = await server.api.client.get(
                f"/api/v1/views/{view_id}", headers=server.api.auth("supervisor", "sup1")
            )
            assert [key["field"] for key in response.json()["sort"]] == ["status", third]
            assert page.problems.errors == []


async def test_a_customer_name_with_markup_shows_as_text(browser, backend, tmp_path):
    name = '<img src=x onerror="window.pwned=1"><b>Bold</b>'
    async with live_server(backend, tmp_path / "data") as server:
        view = await saved_view(server.api)
        cid = await arrive(server.api, name=name)
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, f"/views/{view['id']}") as page:
            cell = page.locator(f"tr[data-id='{cid}'] td[data-column='customer_name']")
            await cell.wait_for()
            assert await cell.text_content() == name
            assert await cell.locator("img, b").count() == 0
            assert await page.evaluate("window.pwned") is None
        async with opened(browser, server.url, token, f"/conversations/{cid}") as page:
            title = page.locator("#conversation-title")
            await title.wait_for()
            assert name in await title.text_content()
            assert await page.locator("main img, main b").count() == 0


async def initiated_call(server, contact: str = "+34911000101") -> str:
    headers = {**server.api.auth("supervisor", "sup1"), "Idempotency-Key": "rec-1"}
    response = await server.api.client.post(
        "/api/v1/conversations/initiate",
        json={"channel": "call", "contact": contact},
        headers=headers,
    )
    assert response.status_code == 202, response.text
    return response.json()["conversation_id"]


async def test_a_recording_plays_inline_from_the_play_icon(browser, backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        view = await saved_view(server.api, columns=["id", "status", "contact"])
        cid = await initiated_call(server)  # the sandbox's `01` leaves a 3 s recording
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, f"/views/{view['id']}") as page:
            play = page.locator(f"tr[data-id='{cid}'] button.play")
            await play.wait_for(timeout=20000)  # answered after ~1 s, hung up ~3 s later
            await play.click()
            audio = page.locator(f"tr[data-id='{cid}'] audio")
            await audio.wait_for()
            await page.wait_for_function(
                "id => { const a = document.querySelector(`tr[data-id='${id}'] audio`);"
                " return a && a.currentTime > 0.2 && a.duration > 2; }",
                arg=cid,
            )
            assert page.problems.errors == []


async def test_the_inline_player_appears_though_its_row_changed_meanwhile(
    browser, backend, tmp_path
):
    async with live_server(backend, tmp_path / "data") as server:
        view = await saved_view(server.api, columns=["id", "status", "ticket_id"])
        cid = await initiated_call(server)
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, f"/views/{view['id']}") as page:
            play = page.locator(f"tr[data-id='{cid}'] button.play")
            await play.wait_for(timeout=20000)
            # the link is minted only after the redraw
            held, release = await held_requests(page, "**/recordings/*/link")
            await play.click()
            await asyncio.wait_for(held.wait(), 10)
            await post(server.api, cid, "ticket.linked", ticket_id="T-42")
            cell = page.locator(f"tr[data-id='{cid}'] td[data-column='ticket_id']")
            await cell.filter(has_text="T-42").wait_for()
            release.set()
            await page.wait_for_function(
                "id => { const a = document.querySelector(`tr[data-id='${id}'] audio`);"
                " return a && a.currentTime > 0.2; }",
                arg=cid,
            )
            assert page.problems.errors == []


async def test_hover_to_initiate_makes_one_conversation_on_a_double_click(
    browser, backend, tmp_path
):
    contact = "+34911000103"  # the sandbox rings this one and nobody answers
    async with live_server(backend, tmp_path / "data") as server:
        view = await saved_view(
            server.api,
            columns=["id", "contact", "direction", "status"],
            filters=[{"field": "contact", "op": "eq", "value": contact}],
        )
        first = await arrive(server.api, "call", contact=contact)
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, f"/views/{view['id']}") as page:
            started, answered = [], []
            page.on(
                "request",
                lambda r: started.append(r) if r.url.endswith("/initiate") else None,
            )
            page.on(
                "response",
                lambda r: answered.append(r) if r.url.endswith("/initiate") else None,
            )
            cell = page.locator(f"tr[data-id='{first}'] td[data-column='contact']")
            await cell.hover()
            await cell.get_by_role("button", name=f"Call {contact}").dblclick()
            await page.locator("table[data-view] tbody tr", has_text="Outgoing").wait_for()
            await page.wait_for_function(
                "() => document.querySelectorAll('table[data-view] tbody tr').length === 2"
            )
            await wait_for(lambda: started and len(answered) == len(started))
            ids = {(await r.json())["conversation_id"] for r in answered}
            assert len(ids) == 1
            rows_api = await server.api.client.get(
                f"/api/v1/views/{view['id']}/rows", headers=server.api.auth("supervisor", "sup1")
            )
            assert rows_api.json()["total"] == 2
            assert await page.locator("[data-total]").text_content() == "2"
            assert page.problems.errors == []


async def test_scrolling_fetches_more_and_rows_arriving_above_keep_the_reader_in_place(
    browser, backend, tmp_path
):
    async with live_server(backend, tmp_path / "data") as server:
        view = await saved_view(server.api)
        events = []
        for n in range(130):
            cid = f"c-{n:04d}"
            event = server.api.event(
                "conversation.created",
                cid,
                f"2026-11-20T10:{n // 60:02d}:{n % 60:02d}Z",
                channel="chat",
                contact=f"+3491300{n:04d}",
                customer={"name": f"Customer {n}"},
            )
            events.append(event)
        await server.api.post_events(events)
        token = server.api.token("supervisor", "sup1")
        async with opened(
            browser,
            server.url,
            token,
            f"/views/{view['id']}",
            viewport={"width": 1200, "height": 700},
        ) as page:
            rows = page.locator("table[data-view] tbody tr")
            await page.locator("tr[data-id='c-0129']").wait_for()
            assert await rows.count() == 50  # the first window
            wrap = page.locator(".table-wrap")
            await wrap.evaluate("w => { w.scrollTop = w.scrollHeight; }")
            await page.locator("tr[data-id='c-0079']").wait_for()  # the next page came
            await page.wait_for_function(
                "() => document.querySelectorAll('table[data-view] tbody tr').length >= 100"
            )
            # Read from the middle: the row at the top of the box stays where it is
            # when new rows arrive above it.
            anchor = page.locator("tr[data-id='c-0100']")
            await anchor.evaluate(
                "tr => { tr.closest('.table-wrap').scrollTop = tr.offsetTop - 40; }"
            )
            before = await anchor.evaluate("tr => tr.getBoundingClientRect().top")
            for _ in range(3):
                await arrive(server.api)
            await page.wait_for_function(
                "() => document.querySelector('[data-total]').textContent === '133'"
            )
            after = await anchor.evaluate("tr => tr.getBoundingClientRect().top")
            assert abs(after - before) < 2, (before, after)
            assert page.problems.errors == []


async def test_a_gap_in_seq_or_a_resync_makes_the_page_subscribe_again(browser, backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        view = await saved_view(server.api)
        first = await arrive(server.api)
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, f"/views/{view['id']}") as page:
            # This first load's socket is open before the listener: it sees the next one.
            await page.locator(f"tr[data-id='{first}']").wait_for()
            subscribes = []

            def on_socket(socket):
                socket.on(
                    "framesent",
                    lambda payload: (
                        subscribes.append(payload) if '"subscribe"' in str(payload) else None
                    ),
                )

            page.on("websocket", on_socket)
            await page.reload()  # the token stays with the tab; now with a listener
            await page.locator(f"tr[data-id='{first}']").wait_for()
            assert len(subscribes) == 1
            # Lose a delta: the client's seq falls behind what the server sends next.
            await page.evaluate("() => { window.switchboardView.subscription.seq -= 1; }")
            second = await arrive(server.api)
            await wait_for(lambda: len(subscribes) == 2)
            await page.locator(f"tr[data-id='{second}']").wait_for()
            # A resync from the server: subscribe again, and the table stays whole.
            await page.evaluate(
                "() => { const v = window.switchboardView;"
                " v.live.receive(JSON.stringify({type: 'resync', sub: v.subscription.id,"
                " reason: 'test'})); }"
            )
            await wait_for(lambda: len(subscribes) == 3)
            third = await arrive(server.api)
            await page.locator(f"tr[data-id='{third}']").wait_for()
            assert await page.locator("table[data-view] tbody tr").count() == 3
            assert page.problems.errors == []


async def test_the_table_and_the_dialogs_work_by_keyboard_and_have_labels(
    browser, backend, tmp_path
):
    async with live_server(backend, tmp_path / "data") as server:
        view = await saved_view(server.api, name="Escalations", columns=["id", "contact"])
        cid = await arrive(server.api, "call", contact="+34911000177")
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, f"/views/{view['id']}") as page:
            table = page.get_by_role("table", name="Escalations")
            await table.get_by_role("row").nth(1).wait_for()
            headers = [
                await h.text_content() for h in await table.get_by_role("columnheader").all()
            ]
            assert headers == ["Conversation ID", "Contact"]
            # The row's link and its contact actions are reachable with Tab.
            link = table.get_by_role("link", name=cid)
            await link.focus()
            await page.keyboard.press("Tab")
            focused = await page.evaluate("() => document.activeElement.getAttribute('aria-label')")
            assert focused == "Call +34911000177"
            # The message dialog: opened with Enter, labelled, closed with Escape, and
            # focus comes back to the button that opened it.
            await page.keyboard.press("Tab")
            await page.keyboard.press("Enter")
            dialog = page.get_by_role("dialog", name="Message +34911000177")
            await dialog.wait_for()
            assert await page.evaluate("() => document.activeElement.id") == "message-text"
            await page.keyboard.press("Escape")
            await dialog.wait_for(state="detached")
            focused = await page.evaluate("() => document.activeElement.getAttribute('aria-label')")
            assert focused == "Message +34911000177"
            # The view editor, by keyboard too.
            await page.get_by_role("button", name="Edit view").focus()
            await page.keyboard.press("Enter")
            editor = page.get_by_role("dialog", name="Edit view “Escalations”")
            await editor.wait_for()
            assert (await page.evaluate("() => document.activeElement.id")).startswith("name-")
            await page.keyboard.press("Escape")
            await editor.wait_for(state="detached")
            assert await page.evaluate("() => document.activeElement.textContent") == "Edit view"
            assert page.problems.errors == []


async def test_the_views_list_shows_private_and_shared_views_with_live_counts(
    browser, backend, tmp_path
):
    async with live_server(backend, tmp_path / "data") as server:
        mine = await saved_view(server.api, name="Mine")
        shared = await saved_view(
            server.api,
            user="sup2",
            name="Team WhatsApp",
            visibility="tenant",
            filters=[{"field": "channel", "op": "in", "value": ["whatsapp"]}],
        )
        hidden = await saved_view(server.api, user="sup2", name="Someone else's")
        await arrive(server.api, "call")
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, "/views") as page:
            count = "li[data-view-id='{}'] .count"
            await page.wait_for_function(text_is(count.format(mine["id"]), "1"))
            await page.wait_for_function(text_is(count.format(shared["id"]), "0"))
            assert await page.locator(f"li[data-view-id='{hidden['id']}']").count() == 0
            shared_item = page.locator(f"li[data-view-id='{shared['id']}']")
            assert "Shared" in await shared_item.text_content()
            assert "Channel is WhatsApp" in await shared_item.text_content()
            await arrive(server.api, "whatsapp")
            await page.wait_for_function(text_is(count.format(mine["id"]), "2"))
            await page.wait_for_function(text_is(count.format(shared["id"]), "1"))
            assert page.problems.errors == []


async def test_without_a_token_the_page_asks_for_one(browser, backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        view = await saved_view(server.api, name="Asked")
        async with opened(browser, server.url, None, f"/views/{view['id']}") as page:
            form = page.get_by_role("form", name="Sign in")
            await form.wait_for()
            await form.get_by_label("Token").fill("not-a-token")
            await form.get_by_role("button", name="Sign in").click()
            await page.get_by_text("The token was refused").wait_for()
            agent = server.api.token("agent", "a1")
            await form.get_by_label("Token").fill(agent)
            await form.get_by_role("button", name="Sign in").click()
            await page.get_by_text("This page is for the supervisor or admin role").wait_for()
            await form.get_by_label("Token").fill(server.api.token("supervisor", "sup1"))
            await form.get_by_role("button", name="Sign in").click()
            await page.get_by_role("table", name="Asked").wait_for()


async def test_the_detail_page_shows_the_conversation_and_follows_it(browser, backend, tmp_path):
    async with live_server(backend, tmp_path / "data") as server:
        api = server.api
        cid = await arrive(api, "whatsapp", name="Ana Pérez")
        await post(api, cid, "media.message", message_id="m1", sender="customer", text="Hola!")
        await post(api, cid, "ticket.linked", ticket_id="T-42", system="helpdesk")
        token = api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, f"/conversations/{cid}") as page:
            await page.get_by_role("heading", name=f"Ana Pérez · WhatsApp · {cid}").wait_for()
            transcript = page.get_by_role("list", name="Messages")
            await transcript.get_by_text("Hola!").wait_for()
            await page.get_by_text("T-42 (helpdesk)").wait_for()
            timeline = page.get_by_role("region", name="Event timeline")
            assert await timeline.get_by_role("row").count() == 4  # header and 3 events
            # It follows the conversation: a new message shows without a reload.
            await post(api, cid, "media.message", message_id="m2", sender="customer", text="¿Hay?")
            await transcript.get_by_text("¿Hay?").wait_for()
            assert await timeline.get_by_role("row").count() == 5
            assert page.problems.errors == []


# Text around U+FFFF, where UTF-16 code unit order (JavaScript's <) and code point order
# (the server's: UTF-8 bytes under COLLATE "C" or SQLite's BINARY; Python's too) differ.
AROUND_U_FFFF = ["b", "a", "\U0001f600x", "\uff21", "ab", "a\ue000", "a\U00010000", "", "\ud7ff"]


async def test_the_live_table_orders_text_by_code_point_as_the_server_does(
    browser, backend, tmp_path
):
    by_code_unit = sorted(AROUND_U_FFFF, key=lambda text: text.encode("utf-16-be"))
    assert by_code_unit != sorted(AROUND_U_FFFF)  # the words tell the two orders apart
    async with live_server(backend, tmp_path / "data") as server:
        token = server.api.token("supervisor", "sup1")
        async with opened(browser, server.url, token, "/views") as page:
            ordered = await page.evaluate(
                "async (words) => {"
                " const { byCodePoint } = await import('/static/js/live.js');"
                " return [...words].sort(byCodePoint); }",
                AROUND_U_FFFF,
            )
    assert ordered == sorted(AROUND_U_FFFF)


async def test_the_open_view_follows_another_supervisors_patch_and_delete(
    browser, backend, tmp_path
):
    async with live_server(backend, tmp_path / "data") as server:
        api = server.api
        view = await saved_view(api, name="Chats and texts", visibility="tenant")
        chat = await arrive(api, "chat")
        sms = await arrive(api, "sms")
        token = api.token("supervisor", "sup2")  # A watches sup1's shared view
        async with opened(browser, server.url, token, f"/views/{view['id']}") as page:
            table = page.locator(f"table[data-view='{view['id']}']")
            await table.locator(f"tr[data-id='{chat}']").wait_for()
            await table.locator(f"tr[data-id='{sms}']").wait_for()
            # B narrows the filter to SMS and renames the view, over HTTP.
            response = await api.client.patch(
                f"/api/v1/views/{view['id']}",
                json={
                    "name": "Texts only",
                    "filters": [{"field": "channel", "op": "in", "value": ["sms"]}],
                },
                headers=api.auth("supervisor", "sup1"),
            )
            assert response.status_code == 200, response.text
            # A's table follows without a reload: the chat row goes, the title changes.
            await table.locator(f"tr[data-id='{chat}']").wait_for(state="detached")
            await page.wait_for_function(text_is("#view-title", "Texts only"))
            await table.locator(f"tr[data-id='{sms}']").wait_for()
            await page.wait_for_function(
                "() => document.querySelector('[data-total]').textContent === '1'"
            )
            # And stays live on the new definition: a new chat stays out, a new SMS in.
            ignored = await arrive(api, "chat")
            later = await arrive(api, "sms")
            await table.locator(f"tr[data-id='{later}']").wait_for()
            assert await table.locator(f"tr[data-id='{ignored}']").count() == 0
            await page.screenshot(path=str(tmp_path / "view-changed.png"))
            # B deletes it: A is told, and the table is gone.
            response = await api.client.delete(
                f"/api/v1/views/{view['id']}", headers=api.auth("supervisor", "sup1")
            )
            assert response.status_code == 200, response.text
            message = page.get_by_role("alert")
            await message.wait_for()
            assert "This view was deleted." in await message.text_content()
            assert await page.locator("table[data-view]").count() == 0
            await page.screenshot(path=str(tmp_path / "view-deleted.png"))
            assert page.problems.errors == []
