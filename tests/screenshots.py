"""Screenshots of each page with demo data, for docs/screenshots/:

    .venv/bin/python -m tests.screenshots [seconds of demo traffic, default 40]

Runs the server with the demo (a fresh SQLite under a temporary directory), lets the
traffic play, then opens each page in headless Chromium as a demo user would.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

import httpx
import uvicorn

from server.app import create_app
from server.core.auth import mint_token
from server.core.settings import Settings
from server.demo.traffic import TENANT
from server.serve import uvicorn_config
from server.storage.migrate import migrate
from tests.browser_support import CHROMIUM, FLAGS
from tests.support import free_port, wait_for

OUT = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
VIEWPORT = {"width": 1440, "height": 900}


async def main(seconds: float) -> None:
    from playwright.async_api import async_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings.from_env(
            {"SWITCHBOARD_DATA_DIR": folder, "SWITCHBOARD_SECRET": "screenshots-" + "x" * 32}
        )
        await asyncio.to_thread(migrate, settings.database_url)
        app = create_app(settings, demo=True)
        port = free_port()
        server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port, loop="asyncio"))
        server.config.setup_event_loop = lambda: None
        task = asyncio.create_task(server.serve())
        url = f"http://127.0.0.1:{port}"

        def token(role: str, user: str) -> str:
            return mint_token(settings.secret, TENANT, role, user)

        try:
            await wait_for(lambda: server.started, 30)
            async with httpx.AsyncClient(base_url=url) as client:
                sup = {"Authorization": f"Bearer {token('supervisor', 'sup1')}"}
                views = [
                    {
                        "name": "All conversations today",
                        "visibility": "tenant",
                        "filters": [{"field": "created_at", "op": "within", "value": "today"}],
                        "columns": [
                            "id",
                            "customer_name",
                            "created_time",
                            "channel",
                            "direction",
                            "team",
                            "status",
                            "state",
                            "agent_name",
                            "contact",
                            "wait_s",
                            "disposition",
                        ],
                    },
                    {
                        "name": "Unanswered today",
                        "visibility": "tenant",
                        "filters": [
                            {
                                "field": "state",
                                "op": "in",
                                "value": [
                                    "dropped",
                                    "queue_timeout",
                                    "enqueue_failed",
                                    "out_of_business_hours",
                                    "customer_did_not_respond",
                                ],
                            },
                            {"field": "created_at", "op": "within", "value": "today"},
                        ],
                        "columns": ["id", "customer_name", "created_time", "channel", "state"],
                    },
                    {
                        "name": "WhatsApp and SMS waiting",
                        "filters": [
                            {"field": "channel", "op": "in", "value": ["whatsapp", "sms"]},
                            {"field": "status", "op": "in", "value": ["new", "queued"]},
                        ],
                        "columns": ["id", "customer_name", "channel", "status", "contact"],
                    },
                ]
                made = []
                for body in views:
                    response = await client.post("/api/v1/views", json=body, headers=sup)
                    response.raise_for_status()
                    made.append(response.json())
                agent = {"Authorization": f"Bearer {token('agent', 'a1')}"}
                presence = {"presence": "available"}
                await client.put("/api/v1/agents/me/presence", json=presence, headers=agent)
                await asyncio.sleep(seconds)  # the demo traffic plays meanwhile
                rows = (
                    await client.get(f"/api/v1/views/{made[0]['id']}/rows?limit=200", headers=sup)
                ).json()["rows"]
            chat = next(
                (
                    r
                    for r in rows
                    if r["channel"] in ("chat", "whatsapp", "sms") and r["status"] == "closed"
                ),
                rows[0],
            )
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(
                    executable_path=CHROMIUM, args=FLAGS, headless=True
                )

                async def shoot(name: str, role: str, user: str, path: str, ready, act=None):
                    context = await browser.new_context(viewport=VIEWPORT)
                    page = await context.new_page()
                    sep = "&" if "?" in path else "?"
                    await page.goto(f"{url}{path}{sep}token={token(role, user)}")
                    await page.locator(ready).first.wait_for(timeout=120_000)
                    # Every count and total filled in, and the data-age badge ticked.
                    await page.wait_for_function(
                        "() => ![...document.querySelectorAll('.count, [data-total]')]"
                        ".some(e => e.textContent === '…')"
                        " && document.querySelector('[data-age]')?.textContent",
                        timeout=30_000,
                    )
                    if act:
                        await act(page)
                    await page.screenshot(path=str(OUT / f"{name}.png"))
                    await context.close()
                    print(f"docs/screenshots/{name}.png")

                async def open_editor(page):
                    await page.get_by_role("button", name="Edit view").click()
                    await page.get_by_role("dialog").wait_for()

                await shoot("views", "supervisor", "sup1", "/views", ".count:not(:empty)")
                view_path = f"/views/{made[0]['id']}"
                await shoot("view", "supervisor", "sup1", view_path, "tbody tr")
                await shoot("view-editor", "supervisor", "sup1", view_path, "tbody tr", open_editor)
                await shoot(
                    "conversation", "supervisor", "sup1", f"/conversations/{chat['id']}", "h2"
                )
                await shoot("agent", "agent", "a1", "/agent", "[data-offer]")
                await shoot("wallboard", "wallboard", "wall", "/wallboard", "[data-team]")
                await browser.close()
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 15)


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1]) if len(sys.argv) > 1 else 40))
