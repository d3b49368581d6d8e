"""The runtime's purge reaches every store that grows (docs/decisions/0035-retention.md):
the SQL modules, the orders' documents (SQLite and mongomock) and the bus's dead letters,
each counted per store and kind in seams_purged at GET /metrics; undelivered events and what
is younger than its retention stay."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from app.bus.delivery_store import dead_letters
from app.bus.envelope import wrap
from app.kernel.ids import utcnow
from app.modules.users.contracts import UserRegistered
from tests.support.seams import Seams, fast_settings, running
from tests.support.stores import store_urls

pytestmark = pytest.mark.anyio

BACKENDS = ("memory", "files", "mongomock", pytest.param("postgresql", marks=pytest.mark.services))


async def purged(seams: Seams) -> dict[tuple[str, str], float]:
    """seams_purged_total per (store, kind), as GET /metrics shows it."""
    text = (await seams.client.get("/metrics")).text
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if line.startswith("seams_purged_total{"):
            labels, value = line[len("seams_purged_total{") :].split("} ")
            fields = dict(part.split("=") for part in labels.split(","))
            counts[(fields["store"].strip('"'), fields["kind"].strip('"'))] = float(value)
    return counts


def grew(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[tuple[str, str], float]:
    return {
        key: value - before.get(key, 0.0)
        for key, value in after.items()
        if value > before.get(key, 0.0)
    }


async def place_order(seams: Seams, user: dict[str, object], key: str) -> None:
    response = await seams.client.post(
        "/api/orders",
        headers={**user["headers"], "Idempotency-Key": key},  # type: ignore[dict-item]
        json={"user_id": user["id"], "currency": "EUR", "payment_token": "tok_visa",
              "items": [{"sku": "a", "quantity": 1, "unit_price": 5}]},
    )  # fmt: skip
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_runtime_purges_every_store_and_counts_it(backend: str, tmp_path: Path) -> None:
    async with (
        store_urls(backend, tmp_path) as urls,
        running(fast_settings(idempotency_ttl_seconds="0.5", **urls)) as seams,
    ):
        user = await seams.register("Pat")
        await place_order(seams, user, "once")
        await seams.settle()
        consumer = "notifications"  # a consumer of this process, with a letter a month old
        letter = await seams.runtime.bus.store.add_dead_letter(
            consumer,
            wrap(UserRegistered(user_id="u-x", registered_at="2026-01-01T00:00:00Z"),
                 producer="users", aggregate_id="u-x", sequence=1, correlation_id="c",
                 causation_id=None),
            "broken",
            3,
        )  # fmt: skip
        before = await purged(seams)

        assert await seams.runtime.purge() == 0  # nothing is old enough yet
        assert grew(before, await purged(seams)) == {}

        await asyncio.sleep(0.5)  # the idempotency keys' lifetime
        async with seams.runtime.bus.store.transaction() as connection:
            await connection.execute(
                dead_letters.update()
                .where(dead_letters.c.id == letter.id)
                .values(failed_at=utcnow() - timedelta(days=31))
            )
        removed = await seams.runtime.purge(retention_seconds=0)

        counted = grew(before, await purged(seams))
        assert removed == sum(counted.values())
        assert counted[("orders", "idempotency_keys")] == 1
        assert counted[("orders", "inbox")] >= 1  # the payment's outcome applied to the order
        assert counted[("payments", "inbox")] >= 1
        assert counted[("users", "outbox")] >= 1
        assert counted[("bus", "dead_letters")] == 1
        assert await seams.runtime.bus.store.dead_letter(letter.id) is None
        orders = (await seams.client.get("/api/orders", headers=user["headers"])).json()
        assert len(orders["items"]) == 1  # the state itself is never purged
