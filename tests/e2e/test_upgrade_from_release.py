"""A data dir written by release 8e8cbb7 (tests/fixtures/releases/) opens with today's code:
every store is migrated, everything it held is served, and the event it had left in an
outbox is delivered (issue 17, point 2; docs/decisions/0028-migrations.md)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from app.kernel.migrations import check_schemas
from app.modules.payments.store import PaymentsStore
from tests.support.invariants import order_breaches, read_records
from tests.support.release_tables import migrations_of
from tests.support.seams import fast_settings, running
from tests.support.server import run_briefly

pytestmark = pytest.mark.anyio

RELEASE = Path(__file__).parents[1] / "fixtures" / "releases" / "8e8cbb7"
EXPECTED: dict[str, Any] = json.loads((RELEASE / "expected.json").read_text())
PASSWORD = "correct horse"


def copy_of_the_release(tmp_path: Path) -> Path:
    data_dir = tmp_path / "var"
    shutil.copytree(RELEASE / "data", data_dir)
    data_dir.chmod(0o700)
    return data_dir


async def test_the_new_code_serves_what_the_release_stored_and_delivers_its_outbox(
    tmp_path: Path,
) -> None:
    data_dir = copy_of_the_release(tmp_path)
    async with running(fast_settings(data_dir=str(data_dir))) as seams:
        await seams.settle()
        stores = [m.store for m in seams.runtime.modules] + [seams.runtime.bus.store]
        for state in await check_schemas(stores, "production"):  # nothing left behind
            assert state.at_head, state
        orders = {order["id"]: order for order in await seams.all_pages("/api/orders")}
        assert set(orders) == set(EXPECTED["orders"])
        for order_id, status in EXPECTED["orders"].items():
            # the order left PENDING with its OrderPlaced in the outbox is charged now
            wanted = "PAID" if status.startswith("PENDING") else status
            assert (await seams.get(f"/api/orders/{order_id}"))["status"] == wanted, order_id

        records = await read_records(seams.all_pages)
        for order_id, order in records.orders.items():  # one payment, no doubled notice
            notices = records.notices_of[order_id]
            assert order_breaches(order, records.payments_of[order_id], notices) == [], order
            for payment in records.payments_of[order_id]:
                assert (await seams.get(f"/api/payments/{payment['id']}"))["order_id"] == order_id
        for notification in await seams.all_pages("/api/notifications"):
            found = await seams.get(f"/api/notifications/{notification['id']}")
            assert found["id"] == notification["id"]

        for email in EXPECTED["users"]:  # its users still log in with their passwords
            await seams.log_in(email, PASSWORD)


@pytest.mark.slow
async def test_migrate_check_names_every_store_of_the_release_as_behind(tmp_path: Path) -> None:
    data_dir = copy_of_the_release(tmp_path)
    code, output = await run_briefly(
        ["migrate", "--check", "--data-dir", str(data_dir)], seconds=60
    )
    assert code == 1, output
    for store in ("users", "orders", "payments", "notifications", "bus"):
        assert f"{store}: at unversioned, pending up to" in output, output
    code, output = await run_briefly(["migrate", "--data-dir", str(data_dir)], seconds=60)
    head = migrations_of(PaymentsStore("sqlite://")).head
    assert code == 0 and f"payments: unversioned -> {head} (head)" in output, output
