"""A rolling upgrade in split mode done in the wrong order (issue 16, point 7): orders
already publishes OrderPlaced v2 while the payments process still runs the code from before
it accepted v2 (tests/support/payments_before_v2.py). That process charges a v1 as before
and parks the v2, naming the version it needs, never misreading it; once payments is
upgraded (the same process restarted with today's code) it charges the parked v2, and, like
any process that knows both, a new v1 and a new v2 (docs/decisions/0027-tolerant-readers.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from app.bus import Envelope
from tests.support.before_v2 import TOTAL, old_order, publish_alone
from tests.support.seams import fast_settings
from tests.support.split import Split, split_system

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]

NEEDS_V2 = (
    "OrderPlaced version 2 is newer than this consumer reads (version 1): it needs a "
    "consumer that knows OrderPlaced v2"
)


async def left_by_the_old_code(split: Split, user_id: str) -> Envelope:
    """An order as the orders code before v2 wrote it, its OrderPlaced v1 in the stream."""
    assert split.data_dir is not None
    settings = fast_settings(data_dir=str(split.data_dir), ephemeral="false")
    placed = await old_order(settings, user_id, in_outbox=False)
    await publish_alone(split.nats.url, [placed])
    return placed


async def statuses(split: Split, order_ids: Sequence[str]) -> list[str]:
    return [(await split.get(f"/api/orders/{order_id}"))["status"] for order_id in order_ids]


async def payments_of(split: Split, order_id: str) -> list[tuple[str, int]]:
    found = await split.all_pages("/api/payments", order_id=order_id)
    return [(payment["status"], payment["amount"]) for payment in found]


def outcomes(state: dict[str, Any]) -> dict[str, int]:
    """payments' outcomes of OrderPlaced in one process's /api/admin/bus."""
    return {
        count["outcome"]: int(count["count"])
        for count in state["counts"]
        if (count["type"], count["consumer"]) == ("OrderPlaced", "payments")
    }


async def test_a_payments_process_behind_parks_v2_and_once_upgraded_charges_it(
    tmp_path: Path,
) -> None:
    async with split_system(tmp_path) as split:
        behind = await split.restart("payments", python_module="tests.support.payments_before_v2")
        user = await split.register("Rolling")
        new = await split.place(user, items=(("book", 2, 1250), ("pen", 3, 199)))  # v2
        old = await left_by_the_old_code(split, user["id"])  # v1
        await split.settle()

        assert await statuses(split, [new["id"], old.aggregate_id]) == ["PENDING", "PAID"]
        assert await payments_of(split, new["id"]) == []
        assert outcomes(await split.bus_state(behind)) == {"handled": 1, "parked": 1}
        log = behind.log_path.read_text()
        assert f"for {new['id']}: {NEEDS_V2}" in log
        assert "parked until the consumer is upgraded (upgrade consumers first)" in log
        assert set((await split.dead_letters()).values()) == {0}

        upgraded = await split.restart("payments")  # today's code: accepts v1 and v2
        newer = await split.place(user)
        older = await left_by_the_old_code(split, user["id"])
        await split.settle()

        order_ids = [new["id"], newer["id"], old.aggregate_id, older.aggregate_id]
        assert await statuses(split, order_ids) == ["PAID"] * 4
        assert await payments_of(split, new["id"]) == [("SUCCEEDED", TOTAL)]
        assert await payments_of(split, older.aggregate_id) == [("SUCCEEDED", TOTAL)]
        # The parked one, released on start, and the two new ones; nothing parked again.
        assert outcomes(await split.bus_state(upgraded)) == {"handled": 3}
        assert set((await split.dead_letters()).values()) == {0}
