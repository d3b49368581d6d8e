"""GET /api/<prefix>/{id}/export: what every module holds about a user, composed by the gateway
from each module's own API (API composition; docs/decisions/0031-export-by-composition.md).

Each module declares where its API shows what it holds about one user (Module.user_data); the
one holding each user's record (`record`) serves the export under its prefix. The gateway asks
each route, as the caller, through its own front door: in the monolith they are served in
this process, in split mode forwarded to the module processes, and the same code composes
both. Each module decides what the caller may see (the user themself, or an admin); no
module, and not the gateway, reads another's store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import msgspec
from litestar import Request, get
from litestar.handlers import HTTPRouteHandler
from litestar.params import PathParameter

from app.gateway.watch import is_journey_path
from app.kernel.errors import NotFound, Unavailable
from app.kernel.ids import utcnow
from app.kernel.pages import MAX_LIMIT
from app.kernel.problems import AUTHENTICATED, problems
from app.modules.spec import Module, UserData

EXPORT = "export"
INTERNAL = "http://gateway.internal"  # the base URL of the gateway asking itself
FORWARDED_HEADERS = ("authorization", "x-request-id")  # the caller, and the request's id


class ExportOut(msgspec.Struct):
    """Each part as its module's API shows it, so an export says nothing a module would not."""

    user_id: str
    exported_at: datetime
    user: dict[str, Any]  # the user's record, from the module holding it
    # By module: every item of its list for this user (every page).
    held: dict[str, list[dict[str, Any]]]
    # The route each part came from, by module (and "user": the record's).
    sources: dict[str, str]


class SourceFailed(Unavailable):
    """A module did not answer its part: an export is whole or not given."""


class Exports:
    """What the modules declared: the record's module, and the lists composed after it."""

    def __init__(self, modules: Sequence[Module]) -> None:
        declared = [(m.name, data) for m in modules for data in m.user_data]
        records = [name for name, data in declared if data.record]
        self.prefix: str | None = records[0] if records else None
        self.record: UserData | None = next((d for _, d in declared if d.record), None)
        self.lists = [(name, data) for name, data in declared if not data.record]

    def serves(self, path: str) -> bool:
        """Whether the path is the export (under the record's module's prefix)."""
        return is_export_path(path) and path.split("/")[2] == self.prefix

    def routes(self) -> list[HTTPRouteHandler]:
        """The export's route, when the module holding each user's record runs behind this
        gateway (in the monolith; the split gateway answers it in its forwarding route)."""
        return [] if self.prefix is None else [export_route(self)]

    async def of(self, request: Request[Any, Any, Any], user_id: str) -> ExportOut:
        """The record first (its module says whether the caller may see the user at all),
        then every list, each with every page."""
        if self.prefix is None or self.record is None:
            raise NotFound("no module holding each user's record runs here")
        transport = httpx.ASGITransport(app=request.app)  # type: ignore[arg-type]
        headers = _as_the_caller(request.headers)
        async with httpx.AsyncClient(
            transport=transport, base_url=INTERNAL, headers=headers
        ) as api:
            record_path = _route(self.prefix, self.record, user_id)
            user = await _record(api, record_path, user_id)
            held: dict[str, list[dict[str, Any]]] = {}
            sources = {"user": f"GET {record_path}"}
            for name, data in self.lists:
                path = _route(name, data, user_id)
                held[data.key(name)] = await _every_page(api, path)
                sources[data.key(name)] = f"GET {path}"
        return ExportOut(user_id, utcnow(), user, held, sources)


def is_export_path(path: str) -> bool:
    """/api/<prefix>/<id>/export: the gateway's, under a module's prefix."""
    return path.startswith("/api/") and path.count("/") == 4 and path.endswith(f"/{EXPORT}")


def served_by_gateway(path: str) -> bool:
    """A path under a module's prefix that the gateway answers itself, never its module: a
    journey (app/gateway/watch.py) or an export."""
    return is_journey_path(path) or is_export_path(path)


def _route(module: str, data: UserData, user_id: str) -> str:
    # The id as one path segment or query value whatever it holds (a control character, "?",
    # "/", "#", any code point): percent-encoded, never read as the URL's syntax.
    return f"/api/{module}{data.route.format(user_id=quote(user_id, safe=''))}"


def _as_the_caller(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() in FORWARDED_HEADERS}


async def _record(api: httpx.AsyncClient, path: str, user_id: str) -> dict[str, Any]:
    answer = await api.get(path)
    if answer.status_code == 404:
        raise NotFound(f"no user {user_id!r}")
    found: dict[str, Any] = _ok(answer, path)
    return found


async def _every_page(api: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query: dict[str, str | int] = {"limit": MAX_LIMIT}  # the most a page gives
        if cursor is not None:
            query["cursor"] = cursor
        page = _ok(await api.get(httpx.URL(path).copy_merge_params(query)), path)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def _ok(answer: httpx.Response, path: str) -> Any:
    if answer.status_code != 200:
        raise SourceFailed(f"GET {path} answered {answer.status_code}: the export is incomplete")
    return answer.json()


ExportedUserId = Annotated[str, PathParameter(max_length=64, description="A user id.")]


def export_route(exports: Exports) -> HTTPRouteHandler:
    """GET /api/<prefix>/{user_id}/export, the gateway's."""

    @get(
        f"/api/{exports.prefix}/{{user_id:str}}/{EXPORT}",
        operation_id="exportUser",
        responses=problems(*AUTHENTICATED, 404, 503),
        summary="Everything every module holds about a user",
        description=(
            "By the user themself or an admin (anyone else: 404). Composed by the gateway from "
            "each module's own API, as the caller: the user's record, then every page of each "
            "module's list filtered by the user's id (`sources` names each route). No module "
            "reads another's store. 503 when a module does not answer its part: an export is "
            "whole or not given."
        ),
        tags=["gateway"],
        name="export",
    )
    async def export(request: Request[Any, Any, Any], user_id: ExportedUserId) -> ExportOut:
        return await exports.of(request, user_id)

    return export
