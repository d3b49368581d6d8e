"""The export's composition (app/gateway/export.py, docs/decisions/0031), over stand-in
modules: the record first, then every page of every list each module declared; a record the
caller may not see is a 404; a list that does not answer makes the whole export a 503."""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import pytest
from litestar import Litestar, get
from litestar.exceptions import NotFoundException, ServiceUnavailableException
from litestar.params import PathParameter, QueryParameter

from app.gateway.errors import EXCEPTION_HANDLERS
from app.gateway.export import Exports, is_export_path
from app.modules.spec import Assembly, Module, ModuleContext, UserData

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def stand_in(name: str, data: UserData) -> Module:
    def assemble(_context: ModuleContext) -> Assembly:
        raise AssertionError("never assembled here")

    return Module(
        name=name,
        publishes=(),
        subscribes=(),
        open_store=lambda _url: None,  # type: ignore[arg-type,return-value]
        assemble=assemble,
        user_data=(data,),
    )


MODULES = [
    stand_in("people", UserData("/{user_id}", record=True)),
    stand_in("things", UserData("?owner={user_id}")),
    stand_in("broken", UserData("?user_id={user_id}")),
]
THINGS = [{"id": f"t{n}", "owner": "u1"} for n in range(5)]


@get("/api/people/{user_id:str}")
async def person(user_id: Annotated[str, PathParameter()]) -> dict[str, Any]:
    if user_id != "u1":
        raise NotFoundException("no such person")
    return {"id": "u1", "name": "Ada"}


@get("/api/things")
async def things(
    owner: Annotated[str, QueryParameter()],
    limit: Annotated[int, QueryParameter()],
    cursor: Annotated[str | None, QueryParameter()] = None,
) -> dict[str, Any]:
    mine = [t for t in THINGS if t["owner"] == owner and (cursor is None or t["id"] > cursor)]
    page = mine[:2]  # small pages: the export follows next_cursor
    return {"items": page, "next_cursor": page[-1]["id"] if len(mine) > 2 else None}


def app_with(*, broken: bool) -> Litestar:
    @get("/api/broken")
    async def broken_list(
        user_id: Annotated[str, QueryParameter()], limit: Annotated[int, QueryParameter()]
    ) -> dict[str, Any]:
        if broken:
            raise ServiceUnavailableException("down")
        return {"items": [], "next_cursor": None}

    exports = Exports(MODULES)
    return Litestar(
        route_handlers=[person, things, broken_list, *exports.routes()],
        exception_handlers=EXCEPTION_HANDLERS,
    )


async def export(app: Litestar, user_id: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(f"/api/people/{user_id}/export")


async def test_the_record_then_every_page_of_every_list() -> None:
    answer = await export(app_with(broken=False), "u1")

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["user"] == {"id": "u1", "name": "Ada"}
    assert [t["id"] for t in body["held"]["things"]] == [t["id"] for t in THINGS]
    assert body["held"]["broken"] == []
    assert body["sources"] == {
        "user": "GET /api/people/u1",
        "things": "GET /api/things?owner=u1",
        "broken": "GET /api/broken?user_id=u1",
    }


async def test_a_record_the_caller_may_not_see_is_a_404() -> None:
    assert (await export(app_with(broken=False), "u2")).status_code == 404


async def test_a_list_that_does_not_answer_makes_the_export_a_503() -> None:
    answer = await export(app_with(broken=True), "u1")

    assert answer.status_code == 503
    assert "GET /api/broken?user_id=u1 answered 503" in answer.json()["detail"]


def test_the_export_path_is_the_gateways_under_the_records_prefix() -> None:
    exports = Exports(MODULES)
    assert exports.serves("/api/people/u1/export")
    assert not exports.serves("/api/things/u1/export")  # a module's own, forwarded
    assert is_export_path("/api/things/u1/export")
    assert not is_export_path("/api/people/u1")
