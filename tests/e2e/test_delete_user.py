"""Deleting a user everywhere (issue 17, point 3; docs/decisions/0030-crypto-shredding.md):
who may, what each module keeps afterwards, and that no file of the data dir still holds
the user's name or email once the server has stopped."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_upgrade_from_release import EXPECTED, copy_of_the_release
from tests.support.seams import Driver, Seams, fast_settings, running
from tests.support.stores import store_urls

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(
    params=["files", "mongomock", pytest.param("postgresql", marks=pytest.mark.services)]
)
async def seams(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Seams]:
    """The behaviour on SQLite files, on the orders' MongoDB stand-in, and on PostgreSQL."""
    async with store_urls(request.param, tmp_path) as urls, running(fast_settings(**urls)) as s:
        yield s


def memorable_person() -> tuple[str, str]:
    """A name and email no other bytes of a data dir could hold by chance."""
    tag = secrets.token_hex(6)
    return f"Zebulon Quixote {tag}", f"zebulon.{tag}@erasure.example"


async def register_as(seams: Driver, name: str, email: str) -> dict[str, Any]:
    response = await seams.client.post(
        "/api/users",
        json={"name": name, "email": email, "password": "correct horse"},
        headers={"Idempotency-Key": f"signup-{email}"},  # its response is kept too
    )
    assert response.status_code == 201, response.text
    return {**response.json(), **await seams.log_in(email, "correct horse")}


async def a_paid_order(seams: Driver, user: dict[str, Any]) -> dict[str, Any]:
    order = await seams.place(user, "tok_visa")
    await seams.settle()
    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PAID"
    [notice] = await seams.all_pages("/api/notifications", user_id=user["id"])
    assert user["name"] in notice["body"]  # what is erased was there
    return order


async def test_a_user_deletes_themself_and_their_tokens_die_with_them(seams: Seams) -> None:
    name, email = memorable_person()
    user = await register_as(seams, name, email)

    deleted = await seams.client.delete(f"/api/users/{user['id']}", headers=user["headers"])

    assert deleted.status_code == 204, deleted.text
    again = await seams.client.get(f"/api/users/{user['id']}", headers=user["headers"])
    assert again.status_code == 401
    assert "no longer exists" in again.json()["detail"]
    login = await seams.client.post(
        "/api/auth/token", json={"email": email, "password": "correct horse"}
    )
    assert login.status_code == 401


async def test_only_the_user_or_an_admin_may_delete_and_a_second_delete_is_a_404(
    seams: Seams,
) -> None:
    target = await seams.register("Target")
    other = await seams.register("Other")

    by_other = await seams.client.delete(f"/api/users/{target['id']}", headers=other["headers"])
    by_admin = await seams.client.delete(f"/api/users/{target['id']}")
    twice = await seams.client.delete(f"/api/users/{target['id']}")
    unknown = await seams.client.delete("/api/users/no-such-user")

    assert by_other.status_code == 404  # another's account is not even said to exist
    assert by_admin.status_code == 204
    assert twice.status_code == 404
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert (
        await seams.client.get(f"/api/users/{other['id']}", headers=other["headers"])
    ).status_code == 200


async def test_money_records_stay_under_the_id_and_notifications_lose_what_was_personal(
    seams: Seams,
) -> None:
    name, email = memorable_person()
    user = await register_as(seams, name, email)
    order = await a_paid_order(seams, user)

    assert (await seams.client.delete(f"/api/users/{user['id']}")).status_code == 204
    await seams.settle()

    kept = await seams.get(f"/api/orders/{order['id']}")
    assert (kept["status"], kept["total"], kept["user_id"]) == ("PAID", 2500, user["id"])
    [payment] = await seams.all_pages("/api/payments", order_id=order["id"])
    assert (payment["status"], payment["amount"]) == ("SUCCEEDED", 2500)
    [notice] = await seams.all_pages("/api/notifications", user_id=user["id"])
    assert (notice["to"], notice["body"]) == ("[erased]", "[erased]")
    assert notice["order_id"] == order["id"]


async def test_a_refund_after_the_deletion_tells_no_one_and_leaves_no_dead_letter(
    seams: Seams,
) -> None:
    user = await seams.register("Leaving")
    order = await a_paid_order(seams, user)
    assert (await seams.client.delete(f"/api/users/{user['id']}")).status_code == 204

    cancelled = await seams.client.post(f"/api/orders/{order['id']}/cancel")
    await seams.settle()

    assert cancelled.status_code == 202, cancelled.text
    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "REFUNDED"
    notices = await seams.all_pages("/api/notifications", user_id=user["id"])
    assert [n["kind"] for n in notices] == ["payment_succeeded"]
    assert (await seams.get("/api/admin/dead-letters"))["items"] == []


def files_holding(data_dir: Path, *secrets_: str) -> dict[str, list[str]]:
    """Which files hold which of the strings, in their raw bytes (UTF-8, any case)."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in data_dir.rglob("*") if p.is_file()):
        raw = path.read_bytes().lower()
        held = [s for s in secrets_ if s.lower().encode() in raw]
        if held:
            found[str(path.relative_to(data_dir))] = held
    return found


async def test_after_a_deletion_and_a_clean_stop_no_file_of_the_data_dir_holds_the_name_or_email(
    tmp_path: Path,
) -> None:
    name, email = memorable_person()
    async with running(fast_settings(data_dir=str(tmp_path))) as seams:
        user = await register_as(seams, name, email)
        await a_paid_order(seams, user)
        # While it runs, before the deletion, they are on disk (the test can see them).
        assert files_holding(tmp_path, name, email)

        assert (await seams.client.delete(f"/api/users/{user['id']}")).status_code == 204
        await seams.settle()
        await _every_consumer_handled_the_deletion(seams)

    assert files_holding(tmp_path, name, email) == {}


async def _every_consumer_handled_the_deletion(seams: Seams) -> None:
    assert (await seams.get("/api/admin/dead-letters"))["items"] == []


async def test_a_user_of_the_previous_release_is_deleted_without_a_trace_after_the_upgrade(
    tmp_path: Path,
) -> None:
    """Release 8e8cbb7 published its users' details in plain (UserRegistered v1): the users
    outbox forgets what it delivered about the user, notifications erase what they kept, and
    the migration gave the user a key (tests/fixtures/releases)."""
    data_dir = copy_of_the_release(tmp_path)
    email = "grace@example.com"
    async with running(fast_settings(data_dir=str(data_dir))) as seams:
        await seams.settle()
        grace = await seams.log_in(email, "correct horse")
        user_id = EXPECTED["users"][email]
        name = (await seams.get(f"/api/users/{user_id}"))["name"]
        assert files_holding(data_dir, email)

        deleted = await seams.client.delete(f"/api/users/{user_id}", headers=grace["headers"])
        await seams.settle()
        await _every_consumer_handled_the_deletion(seams)

    assert deleted.status_code == 204, deleted.text
    assert files_holding(data_dir, name, email) == {}
