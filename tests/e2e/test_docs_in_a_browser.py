"""The docs page in a real headless browser with no network: every request that leaves the
app's origin is aborted, and the page still lists the API's operations.

Needs Chromium (Debian's `chromium` package) and the playwright package; the browser's
requests to the app are answered by the app in this process, like every other e2e test.
Skipped where Chromium is missing, failed instead under SEAMS_REQUIRE_SERVICES=1 (CI).
"""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Route, async_playwright

from tests.support.seams import Seams, fast_settings, running
from tests.support.tiers import skip_or_fail

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

ORIGIN = "http://testserver.local"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
RENDER_SECONDS = 30


async def test_the_docs_render_every_operation_with_no_network() -> None:
    if CHROMIUM is None:
        skip_or_fail("no Chromium on PATH: apt-get install chromium")
    async with (
        running(fast_settings(ephemeral="true")) as seams,
        async_playwright() as playwright,
    ):
        operations = set((await seams.get("/schema/openapi.json"))["paths"])
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            left_the_origin: list[str] = []
            await page.route("**/*", lambda route: answer(seams, route, left_the_origin))

            await page.goto(f"{ORIGIN}/schema", timeout=RENDER_SECONDS * 1000)
            listed = page.locator(".opblock-summary-path")
            await listed.first.wait_for(timeout=RENDER_SECONDS * 1000)
            # Swagger UI puts zero-width spaces after slashes, so long paths can wrap.
            shown = {(await path.inner_text()).replace("\u200b", "") for path in await listed.all()}
        finally:
            await browser.close()

    assert left_the_origin == []
    assert shown == operations


async def answer(seams: Seams, route: Route, left_the_origin: list[str]) -> None:
    """Answer a same-origin request from the app; abort (and note) any other."""
    parts = urlsplit(route.request.url)
    if f"{parts.scheme}://{parts.netloc}" != ORIGIN:
        left_the_origin.append(route.request.url)
        await route.abort()
        return
    response = await seams.client.request(
        route.request.method,
        route.request.url,
        headers={k: v for k, v in route.request.headers.items() if k.lower() != "host"},
        content=route.request.post_data_buffer,
    )
    await route.fulfill(
        status=response.status_code, headers=dict(response.headers), body=response.content
    )
