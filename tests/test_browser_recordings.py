"""Recordings in real Chromium: the conversation page's player streams a long call with
Range requests from a recording link (no download of the whole file first), seeks with
Range, and mints a fresh link when the browser asks again after its link expired."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from server.providers.recording_links import LINK_TTL_S
from tests.browser_support import BROWSER_TESTS, held_requests, opened
from tests.page_support import post
from tests.recording_support import conversation, stored_recording, wav_bytes
from tests.server_support import live_server
from tests.support import ManualClock, wait_for

pytestmark = BROWSER_TESTS

MINUTES = 15  # a long call: many MB, which the page must not fetch before playing
AUDIO = wav_bytes(MINUTES * 60)
SIZE = len(AUDIO)


class MediaRequests:
    """The page's requests for the recording's file and their answers."""

    def __init__(self, page, rid: str):
        self.answers = []
        page.on(
            "response", lambda r: self.answers.append(r) if f"/recordings/{rid}?" in r.url else None
        )

    async def ranges(self) -> list[tuple[str | None, int, str | None]]:
        """(Range asked for, status, Content-Range) of each answer so far."""
        found = []
        for response in list(self.answers):
            asked = (await response.request.all_headers()).get("range")
            found.append((asked, response.status, response.headers.get("content-range")))
        return found

    async def ranged_from(self, least: int, status: int = 206, url: str | None = None):
        """An answer with `status` to a Range that starts at byte `least` or later."""
        for response in list(self.answers):
            asked = (await response.request.all_headers()).get("range") or ""
            if not asked.startswith("bytes=") or response.status != status:
                continue
            if url is not None and response.url != url:
                continue
            if int(asked.removeprefix("bytes=").split("-")[0] or 0) >= least:
                return response
        return None


async def seeded(server, folder, cid: str, rid: str) -> str:
    """A conversation with a long recording; a supervisor's token for the page."""
    await conversation(server.api, cid)
    await stored_recording(server.api, folder, cid, rid, AUDIO, duration_s=MINUTES * 60)
    return server.api.token("supervisor", "sup1")


def audio_js(rid: str) -> str:
    return f"document.querySelector(\"audio[data-recording='{rid}']\")"


async def test_the_player_streams_and_seeks_with_range_from_a_recording_link(
    browser, backend, tmp_path
):
    async with live_server(backend, tmp_path / "data") as server:
        token = await seeded(server, tmp_path, "c-long", "r-long")
        async with opened(browser, server.url, token, "/conversations/c-long") as page:
            media = MediaRequests(page, "r-long")
            await page.get_by_role("button", name="Play recording r-long").click()
            audio = page.locator("audio[data-recording='r-long']")
            await audio.wait_for()
            src = await audio.get_attribute("src")
            assert src.startswith("/api/v1/conversations/c-long/recordings/r-long?access=")
            assert await audio.get_attribute("preload") == "metadata"
            playing = f"{audio_js('r-long')}.currentTime > 0.3"
            await page.wait_for_function(f"() => {playing} && {audio_js('r-long')}.duration > 890")
            # The browser asked with Range and got parts: the first from byte 0.
            ranges = await media.ranges()
            assert ranges, "no request for the recording"
            assert all(asked and asked.startswith("bytes=") for asked, _, _ in ranges), ranges
            assert all(status == 206 for _, status, _ in ranges), ranges
            assert ranges[0][0].startswith("bytes=0-") and ranges[0][2].endswith(f"/{SIZE}")

            # A seek near the end asks for bytes from there: no wait for what lies before.
            await page.evaluate(f"() => {{ {audio_js('r-long')}.currentTime = 800; }}")
            await page.wait_for_function(f"() => {audio_js('r-long')}.currentTime > 800.3")
            assert await wait_for(lambda: media.ranged_from(SIZE // 2), 10)
            assert await page.locator("main [role=status]").text_content() == ""
            assert page.problems.errors == []


async def test_a_seek_after_the_link_expired_mints_a_fresh_link_and_resumes(
    browser, backend, tmp_path
):
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    async with live_server(backend, tmp_path / "data", clock) as server:
        token = await seeded(server, tmp_path, "c-exp", "r-exp")
        async with opened(browser, server.url, token, "/conversations/c-exp") as page:
            media = MediaRequests(page, "r-exp")
            await page.get_by_role("button", name="Play recording r-exp").click()
            audio = page.locator("audio[data-recording='r-exp']")
            await audio.wait_for()  # the player appears once its link is minted
            await page.wait_for_function(f"() => {audio_js('r-exp')}?.currentTime > 0.3")
            first = await audio.get_attribute("src")
            clock.advance(timedelta(seconds=LINK_TTL_S + 1))
            # The browser has only the start: the seek needs a request, which the
            # expired link cannot make; the player gets a fresh link and resumes there.
            await page.evaluate(f"() => {{ {audio_js('r-exp')}.currentTime = 700; }}")
            assert await wait_for(lambda: media.ranged_from(SIZE // 2, status=401), 10)
            await page.wait_for_function(
                f"() => {{ const a = {audio_js('r-exp')};"
                f" return a !== null && a.getAttribute('src') !== {first!r}"
                f" && a.currentTime > 700.3; }}"
            )
            fresh = await audio.get_attribute("src")
            assert fresh.startswith("/api/v1/conversations/c-exp/recordings/r-exp?access=")
            assert await wait_for(
                lambda: media.ranged_from(SIZE // 2, url=f"{server.url}{fresh}"), 10
            )
            assert await page.locator("main [role=status]").text_content() == ""
            # The one failed request is the expired link's; nothing else went wrong.
            unexpected = [e for e in page.problems.errors if "401" not in e]
            assert unexpected == []


async def test_the_player_appears_though_the_page_was_drawn_again_meanwhile(
    browser, backend, tmp_path
):
    async with live_server(backend, tmp_path / "data") as server:
        token = await seeded(server, tmp_path, "c-redraw", "r-redraw")
        async with opened(browser, server.url, token, "/conversations/c-redraw") as page:
            # the link is minted only after the redraw
            held, release = await held_requests(page, "**/recordings/*/link")
            await page.get_by_role("button", name="Play recording r-redraw").click()
            await asyncio.wait_for(held.wait(), 10)
            await post(server.api, "c-redraw", "ticket.linked", ticket_id="T-7")
            await page.locator("main", has_text="T-7").wait_for()  # drawn again
            release.set()
            await page.wait_for_function(f"() => {audio_js('r-redraw')}?.currentTime > 0.3")
            assert page.problems.errors == []
