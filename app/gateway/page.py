"""The live page at `/`: a learner watches an order cross the seams (issue 14).

The page is three static files shipped inside the package (app/gateway/page/): plain HTML,
CSS and JavaScript, no build step, nothing fetched from anywhere but this origin. It talks
to the same API as any client, with a bearer token it keeps in the tab (never in a URL).

The files are read once, when this module is imported: they are small, and a gateway
serving them from memory needs no file system access per request. Every answer carries a
Content-Security-Policy that lets the page load and connect only to its own origin, so a
mistake in the page cannot make the browser leak an order or a token elsewhere.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated

from litestar import Response, get
from litestar.params import PathParameter
from litestar.types import ControllerRouterHandler

from app.kernel.errors import NotFound

ASSETS_PATH = "/page"
# Only 'self': no inline script or style, no other origin, no plugin, no framing.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
_MEDIA_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page changes with the app: the browser asks again (a 200 from memory is cheap).
    "Cache-Control": "no-cache",
}
AssetName = Annotated[str, PathParameter(max_length=64, description="A file of the page.")]


def _load() -> dict[str, bytes]:
    """Every file of the page by name, read from the installed package."""
    folder = files("app.gateway") / "page"
    return {
        entry.name: entry.read_bytes()
        for entry in folder.iterdir()
        if entry.is_file() and any(entry.name.endswith(suffix) for suffix in _MEDIA_TYPES)
    }


_FILES = _load()


def _answer(name: str) -> Response[bytes]:
    body = _FILES.get(name)
    if body is None or name == "index.html":
        raise NotFound(f"the page has no file {name!r}")
    suffix = name[name.rfind(".") :]
    return Response(body, media_type=_MEDIA_TYPES[suffix], headers=_HEADERS)


@get("/", include_in_schema=False, opt={"public": True}, name="page")
async def page() -> Response[bytes]:
    """The page itself; signing in happens on it, so it needs no token."""
    return Response(_FILES["index.html"], media_type=_MEDIA_TYPES[".html"], headers=_HEADERS)


@get(
    f"{ASSETS_PATH}/{{name:str}}",
    include_in_schema=False,
    opt={"public": True},
    name="page-asset",
)
async def page_asset(name: AssetName) -> Response[bytes]:
    """One of the page's scripts, styles or images (only the files shipped with it)."""
    return _answer(name)


PAGE_ROUTES: list[ControllerRouterHandler] = [page, page_asset]
