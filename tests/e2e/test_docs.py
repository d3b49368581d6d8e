"""The API docs at /schema work with no network: every file the page loads is served by the
app itself, and any other path under /schema is the one problem+json 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest

from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio

CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def seams() -> AsyncIterator[Seams]:
    async with running(fast_settings(ephemeral="true")) as system:
        yield system


class AssetLinks(HTMLParser):
    """Every URL a page's tags load: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        self.urls.extend(value for name, value in attrs if name == wanted and value)


def assets_of(page: str) -> list[str]:
    links = AssetLinks()
    links.feed(page)
    return links.urls


@pytest.mark.parametrize("path", ["/schema", "/schema/swagger"])
async def test_the_docs_page_loads_only_files_the_app_serves(seams: Seams, path: str) -> None:
    page = await seams.client.get(path)

    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    urls = assets_of(page.text)
    assert {url.rsplit(".", 1)[-1] for url in urls} >= {"js", "css"}, urls
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc and url.startswith("/schema/"), url
        asset = await seams.client.get(url)
        assert asset.status_code == 200, url
        expected = CONTENT_TYPES["." + url.rsplit(".", 1)[-1]]
        assert expected in asset.headers["content-type"], (url, asset.headers["content-type"])


@pytest.mark.parametrize(
    "path",
    [
        "/schema/nope",
        "/schema/redoc",
        "/schema/openapi.yaml",
        "/schema/assets/nope.js",
        "/schema/a/b",
    ],
)
async def test_an_unknown_path_under_schema_is_a_problem_json_404(seams: Seams, path: str) -> None:
    response = await seams.client.get(path)

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["title"] == "Not Found"
    assert problem["instance"] == path
    assert problem["request_id"] == response.headers["x-request-id"]


async def test_the_openapi_document_is_still_served(seams: Seams) -> None:
    response = await seams.client.get("/schema/openapi.json")

    assert response.status_code == 200
    assert "/api/orders" in response.json()["paths"]
