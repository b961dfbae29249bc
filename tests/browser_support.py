"""Real headless Chromium for the browser tests (Playwright for Python driving
Debian's /usr/bin/chromium). A missing browser skips the test, or fails it under
SWITCHBOARD_REQUIRE_SERVICES=1 (CI installs it: .ci/run).

One Chromium per test module: starting Playwright's driver and the browser costs
over a second, paid once per module instead of once per test (and per backend).
Tests stay apart by browser contexts (own cookies, storage and cache): each test
opens its own and closes it, and `browser` checks that none is left behind.
Playwright's objects belong to the event loop that made them, so a module that
uses `browser` runs its tests on the module's loop: `pytestmark = BROWSER_TESTS`."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio

from tests.support import service_unavailable

CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium")
HAVE_CHROMIUM = Path(CHROMIUM).exists()  # once, at import: no blocking call in a test
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # A test's click is a user gesture, but a page that starts playback after an
    # await (the recording is fetched first) must not depend on the gesture's timer.
    "--autoplay-policy=no-user-gesture-required",
]

# The marks of a browser test module: the `browser` marker, and the module's event
# loop, which the shared Chromium belongs to.
BROWSER_TESTS = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@dataclass
class PageProblems:
    """What the pages reported that a test did not ask for: uncaught errors and
    console errors. A browser test fails on any of them."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page) -> None:
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                self.errors.append(f"console {message.type}: {message.text}")
                if message.type == "error"
                else None
            ),
        )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def module_chromium() -> AsyncIterator:
    """The module's one Chromium; tests get it through `browser`."""
    if not HAVE_CHROMIUM:
        service_unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=FLAGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def browser(module_chromium) -> AsyncIterator:
    """The module's Chromium, with no context open. A test that leaves one open
    fails, and its contexts are closed so that the next test starts clean."""
    assert module_chromium.is_connected(), "the module's Chromium is gone"
    yield module_chromium
    left = list(module_chromium.contexts)
    for context in left:
        await context.close()
    assert not left, f"the test left {len(left)} browser context(s) open"


@contextlib.asynccontextmanager
async def opened(browser, url: str, token: str | None = None, path: str = "/", **context_args):
    """A fresh browser context (its own sessionStorage) on `url + path`, the token
    given once as ?token= as the links of `make run` give it."""
    context = await browser.new_context(**context_args)
    page = await context.new_page()
    problems = PageProblems()
    problems.watch(page)
    page.problems = problems
    target = f"{url}{path}" + (f"{'&' if '?' in path else '?'}token={token}" if token else "")
    try:
        await page.goto(target)
        yield page
    finally:
        await context.close()


def text_is(selector: str, expected: str) -> str:
    """A page function for wait_for_function: the element's text is `expected`."""
    return f"() => document.querySelector({selector!r})?.textContent === {expected!r}"


async def held_requests(page, pattern: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold the page's requests to `pattern` until released: (held, release). `held` is
    set when one arrives; each goes on once `release` is set."""
    held, release = asyncio.Event(), asyncio.Event()

    async def hold(route) -> None:
        held.set()
        await release.wait()
        await route.continue_()

    await page.route(pattern, hold)
    return held, release
