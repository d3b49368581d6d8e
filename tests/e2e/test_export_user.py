"""GET /api/users/{id}/export (issue 17, point 4; docs/decisions/0031-export-by-composition.md):
composed by the gateway from each module's own API, in process and through the split
gateway (the same test), allowed to the user and to admins only, and in the OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.support.seams import Driver, fast_settings, running
from tests.support.split import split_system

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(
    scope="module",
    params=[
        "monolith",
        pytest.param("split", marks=[pytest.mark.services, pytest.mark.split, pytest.mark.slow]),
    ],
)
async def seams(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Driver]:
    data = tmp_path_factory.mktemp(request.param)
    if request.param == "split":
        async with split_system(data) as system:
            yield system
        return
    async with running(fast_settings(data_dir=str(data))) as system:
        yield system


async def test_a_user_exports_what_every_module_holds_about_them(seams: Driver) -> None:
    user = await seams.register("Exporter")
    order = await seams.place(user, "tok_visa")
    await seams.settle()
    await seams.place(await seams.register("Someone"), "tok_visa")  # not in the export
    await seams.settle()

    answer = await seams.client.get(f"/api/users/{user['id']}/export", headers=user["headers"])

    assert answer.status_code == 200, answer.text
    export = answer.json()
    assert export["user_id"] == user["id"]
    assert {k: export["user"][k] for k in ("id", "name", "email")} == {
        k: user[k] for k in ("id", "name", "email")
    }
    held = export["held"]
    assert [o["id"] for o in held["orders"]] == [order["id"]]
    assert [(p["order_id"], p["amount"]) for p in held["payments"]] == [(order["id"], 2500)]
    assert [n["order_id"] for n in held["notifications"]] == [order["id"]]
    # The details notifications keeps to write to the user: its replica, shown too.
    assert held["notifications.contacts"] == [
        {k: user[k] for k in ("name", "email")} | {"user_id": user["id"]}
    ]
    assert export["sources"] == {
        "user": f"GET /api/users/{user['id']}",
        **{
            m: f"GET /api/{m}?user_id={user['id']}" for m in ("orders", "payments", "notifications")
        },
        "notifications.contacts": f"GET /api/notifications/contacts?user_id={user['id']}",
    }


async def test_an_admin_may_export_anyone_and_another_user_gets_a_404(seams: Driver) -> None:
    user = await seams.register("Exported")
    await seams.place(user, "tok_visa")
    await seams.settle()
    other = await seams.register("Curious")

    by_admin = await seams.client.get(f"/api/users/{user['id']}/export")
    by_other = await seams.client.get(f"/api/users/{user['id']}/export", headers=other["headers"])
    anonymous = await seams.client.get(
        f"/api/users/{user['id']}/export", headers={"Authorization": ""}
    )
    unknown = await seams.client.get("/api/users/no-such-user/export")

    assert by_admin.status_code == 200, by_admin.text
    assert len(by_admin.json()["held"]["orders"]) == 1
    assert by_other.status_code == 404
    assert by_other.headers["content-type"].startswith("application/problem+json")
    assert anonymous.status_code == 401
    assert unknown.status_code == 404


async def test_a_deleted_user_has_nothing_left_to_export(seams: Driver) -> None:
    user = await seams.register("Gone")
    assert (await seams.client.delete(f"/api/users/{user['id']}")).status_code == 204

    answer = await seams.client.get(f"/api/users/{user['id']}/export")

    assert answer.status_code == 404


async def test_the_export_is_in_the_openapi_document(tmp_path: Path) -> None:
    async with running(fast_settings(data_dir=str(tmp_path))) as seams:
        document = await seams.get("/schema/openapi.json")

    operation = document["paths"]["/api/users/{user_id}/export"]["get"]
    assert operation["operationId"] == "exportUser"
    assert "gateway" in operation["tags"]
    assert {"200", "401", "404", "503"} <= set(operation["responses"])


async def test_a_user_sees_only_their_own_contact_details_an_admin_anyones(
    seams: Driver,
) -> None:
    one = await seams.register("One")
    two = await seams.register("Two")
    await seams.place(one, "tok_visa")  # the contact has surely arrived once this settles
    await seams.place(two, "tok_visa")
    await seams.settle()

    def listed(answer: Any) -> list[str]:
        assert answer.status_code == 200, answer.text
        return [c["user_id"] for c in answer.json()["items"]]

    path = "/api/notifications/contacts"
    own = await seams.client.get(path, headers=one["headers"])
    others = await seams.client.get(f"{path}?user_id={two['id']}", headers=one["headers"])
    by_admin = await seams.client.get(f"{path}?user_id={two['id']}")

    assert listed(own) == [one["id"]]
    assert listed(others) == []
    assert listed(by_admin) == [two["id"]]


@pytest.mark.parametrize("odd", ["\x02w\U0005b049", "a?user_id=x", "a#b", "a/b", "..", "%2F", " "])
async def test_an_id_of_any_characters_is_a_404_never_a_500(seams: Driver, odd: str) -> None:
    # Found by the schemathesis fuzz: the id went into the composed routes unencoded.
    answer = await seams.client.get(f"/api/users/{quote(odd, safe='')}/export")

    assert answer.status_code == 404, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
