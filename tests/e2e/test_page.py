"""The live page at `/` is served by the app itself, to anyone, with a policy that keeps the
browser on this origin; everything under /api stays protected, and the page is no API
operation. The browser tests (test_page_in_a_browser.py) drive it; these check the serving."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from typing import Any, cast

import httpx
import msgspec
import pytest

from app.main import create_gateway_app, default_modules
from app.split.topology import declared_topology
from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def seams() -> AsyncIterator[Seams]:
    async with running(fast_settings(ephemeral="true")) as system:
        yield system


class Loads(HTMLParser):
    """Every URL the page's tags load (script src, link href, img src), and any inline
    script or style (the policy would block them)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        if wanted and named.get(wanted):
            self.urls.append(str(named[wanted]))
        elif tag in ("script", "style"):
            self.inline.append(tag)
        if "style" in named:
            self.inline.append(f"{tag} style=")


async def anonymous_get(client: httpx.AsyncClient, path: str) -> httpx.Response:
    """GET with no Authorization header (the test client sends an admin's by default)."""
    request = client.build_request("GET", path)
    del request.headers["Authorization"]
    return await client.send(request)


async def test_the_page_and_its_assets_need_no_token_and_stay_on_the_origin(
    seams: Seams,
) -> None:
    page = await anonymous_get(seams.client, "/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy
    assert "connect-src 'self'" in policy
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy

    loads = Loads()
    loads.feed(page.text)
    assert loads.inline == []
    assert sorted(loads.urls) == ["/page/favicon.svg", "/page/page.css", "/page/page.js"]
    kinds = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for url in loads.urls:
        asset = await anonymous_get(seams.client, url)
        assert asset.status_code == 200, url
        assert asset.headers["content-type"].startswith(kinds[url[url.rfind(".") :]])
        assert asset.headers["x-content-type-options"] == "nosniff"
    script = (await anonymous_get(seams.client, "/page/page.js")).text
    # No other origin named anywhere in what the page runs (SVG's namespace is a name, not
    # an address: nothing is fetched from it).
    assert re.findall(r"https?://(?!www\.w3\.org/2000/svg\b)\S+", script) == []


async def test_every_api_call_still_needs_a_token(seams: Seams) -> None:
    for path in ("/api/orders", "/api/topology"):
        answer = await anonymous_get(seams.client, path)
        assert answer.status_code == 401, path


async def test_a_file_the_page_does_not_have_is_a_problem_404(seams: Seams) -> None:
    for path in ("/page/secrets.txt", "/page/..%2Fpage.py", "/page/index.html"):
        answer = await anonymous_get(seams.client, path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == "application/problem+json"


async def test_the_page_is_not_an_api_operation(seams: Seams) -> None:
    paths = (await seams.get("/schema/openapi.json"))["paths"]
    assert "/" not in paths
    assert not [path for path in paths if path.startswith("/page")]


async def test_the_split_gateway_serves_the_same_page() -> None:
    """The gateway process (python -m app gateway) serves the page itself; it needs no
    broker for that, so its lifespan is not started here."""
    settings = fast_settings(bus_url="nats://127.0.0.1:1", secret_key="k" * 40)
    app = create_gateway_app(settings)
    transport = httpx.ASGITransport(app=cast(Any, app))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway.local") as client:
        page = await client.get("/")
        script = await client.get("/page/page.js")
        topology = await client.get("/api/topology")
        benchmarks = await client.get("/api/benchmarks")
    assert page.status_code == 200
    assert "content-security-policy" in page.headers
    assert script.status_code == 200
    assert "EventStreamParser" in script.text
    # The gateway's own routes the page reads are served there too, to callers with a token.
    assert topology.status_code == 401, topology.text
    assert benchmarks.status_code == 401, benchmarks.text


async def test_the_split_gateway_draws_the_monoliths_topology_from_declarations(
    seams: Seams,
) -> None:
    """The gateway process opens no store: its topology comes from the modules'
    declarations, and shows the same modules, events and edges as the monolith's."""
    monolith = await seams.get("/api/topology")
    declared = msgspec.to_builtins(declared_topology(default_modules()))
    assert [m["name"] for m in declared["modules"]] == [m["name"] for m in monolith["modules"]]
    assert declared["edges"] == monolith["edges"]
    assert declared["events"] == monolith["events"]
    for module in declared["modules"]:
        assert module["store"]["kind"] == "its own, in its process"
