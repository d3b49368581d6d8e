"""Data lives in the data dir across restarts, and work a stopped process left unfinished
is carried on by the next one."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.seams import fast_settings, running

pytestmark = pytest.mark.anyio


async def test_users_and_orders_survive_a_restart(tmp_path: Path) -> None:
    settings = fast_settings(data_dir=str(tmp_path))
    async with running(settings) as seams:
        user = await seams.register("Ada")
        order = await seams.place(user, "tok_visa")
        await seams.settle()

    async with running(settings) as seams:
        assert (await seams.get(f"/api/users/{user['id']}"))["email"] == user["email"]
        assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PAID"
        assert len(await seams.all_pages("/api/payments", order_id=order["id"])) == 1


async def test_a_saga_interrupted_by_a_stop_completes_after_the_restart(tmp_path: Path) -> None:
    slow = fast_settings(data_dir=str(tmp_path), slow_card_seconds="0.5")
    async with running(slow) as seams:
        user = await seams.register("Bo")
        order = await seams.place(user, "tok_slow")
        # Stop while the charge is still at the processor: nothing has been settled yet.
        assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PENDING"

    async with running(fast_settings(data_dir=str(tmp_path))) as seams:
        await seams.settle()
        assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PAID"
        payments = await seams.all_pages("/api/payments", order_id=order["id"])
        assert [(p["status"], p["amount"]) for p in payments] == [("SUCCEEDED", order["total"])]
        notes = await seams.all_pages("/api/notifications", order_id=order["id"])
        assert [n["kind"] for n in notes] == ["payment_succeeded"]
