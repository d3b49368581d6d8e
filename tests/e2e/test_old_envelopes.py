"""Envelopes written before an upgrade, read by the code after it (issue 16, point 6): a v1
envelope left in each place an envelope waits (a SQL outbox, the orders document outbox,
an inbox record, a dead letter, a parked event, the JetStream stream) is handled correctly
by the v2 code, once (docs/decisions/0026-event-versions.md, 0027-tolerant-readers.md).

Each test runs the system once on a data dir (to register the user an order belongs to),
stops it, writes what the code before the upgrade left behind straight into the stores, and
starts the system again: the upgraded process finds it there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from app.bus import DeliveryStore, Envelope
from app.bus.sql_outbox import add_to_outbox
from app.kernel.ids import isoformat, new_id, utcnow
from app.kernel.settings import Settings
from app.modules.users.contracts import UserRegistered
from app.modules.users.passwords import make_hasher
from app.modules.users.store import UsersStore, outbox
from app.modules.users.user import User
from tests.support.before_v2 import ITEMS, TOTAL, old_order, publish_alone
from tests.support.nats import nats_server
from tests.support.seams import PASSWORD, Seams, fast_settings, running
from tests.support.work import HandedOff

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def upgraded(settings: Settings) -> AsyncIterator[Seams]:
    """The system started again on the data dir: the code after the upgrade."""
    async with running(settings) as seams:
        yield seams


async def registered_user(settings: Settings) -> dict[str, Any]:
    """A user registered through a first run of the system, which then stops."""
    async with running(settings) as seams:
        user = await seams.register("Old")
        await seams.settle()
    return user


async def charged_once(seams: Seams, order_id: str) -> None:
    """The order is PAID by exactly one payment, charged at the processor once."""
    await seams.settle()
    order = await seams.get(f"/api/orders/{order_id}")
    [payment] = await seams.all_pages("/api/payments", order_id=order_id)
    assert order["status"] == "PAID", order
    assert (payment["status"], payment["amount"], payment["attempts"]) == (
        "SUCCEEDED",
        TOTAL,
        1,
    )
    assert await seams.runtime.bus.store.count_dead_letters() == 0


def on_disk(tmp_path: Path, **overrides: Any) -> Settings:
    return fast_settings(data_dir=str(tmp_path / "data"), ephemeral="false", **overrides)


async def test_a_v1_order_placed_left_in_the_orders_document_outbox_is_charged_once(
    tmp_path: Path,
) -> None:
    settings = on_disk(tmp_path)
    user = await registered_user(settings)
    placed = await old_order(settings, user["id"], in_outbox=True)

    async with upgraded(settings) as seams:  # its relay finds the v1 envelope on start
        await charged_once(seams, placed.aggregate_id)


async def test_a_v1_user_registered_left_in_the_users_sql_outbox_reaches_its_consumers(
    tmp_path: Path,
) -> None:
    """Before UserRegistered v2 the name and email travelled in plain: notifications keeps
    them as the contact (and tells the user of a payment), orders knows the user."""
    settings = on_disk(tmp_path)
    await registered_user(settings)  # makes the stores
    user_id, email = new_id(), "before.sealing@example.com"
    now = utcnow()
    user, _v2 = User.register(
        user_id=user_id,
        name="Before Sealing",
        email=email,
        password_hash=make_hasher("argon2id-fast").hash(PASSWORD),
        role="user",
        now=now,
        key=b"\0" * 32,  # not stored: v1 had no keys, and this event is in plain
    )
    v1 = Envelope(
        id=new_id(),
        type="UserRegistered",
        version=1,
        occurred_at=isoformat(now),
        producer="users",
        aggregate_id=user_id,
        sequence=1,
        correlation_id=new_id(),
        payload={
            "user_id": user_id,
            "name": "Before Sealing",
            "email": email,
            "registered_at": isoformat(now),
        },
    )
    store = UsersStore(settings.store_url("users"))
    await store.open()
    try:
        async with store.unit_of_work(HandedOff("users", publishes=[UserRegistered])) as work:
            await store.insert(work, user)
            await add_to_outbox(work.connection, outbox, [v1])
    finally:
        await store.close()

    async with upgraded(settings) as seams:
        await seams.settle()
        placed = await seams.place({"id": user_id, **await seams.log_in(email)}, items=ITEMS)
        await charged_once(seams, placed["id"])
        [notice] = await seams.all_pages("/api/notifications", order_id=placed["id"])
    assert notice["to"] == email
    assert notice["body"].startswith("Hello Before Sealing, we received your payment")


async def test_a_v1_order_placed_in_the_payments_inbox_is_not_charged_again(
    tmp_path: Path,
) -> None:
    """Handled before the upgrade (its id claimed in the payments inbox), delivered again
    after it (at least once): the inbox knows it whatever its version."""
    settings = on_disk(tmp_path)
    user = await registered_user(settings)
    placed = await old_order(settings, user["id"], in_outbox=True)
    async with upgraded(settings) as seams:
        await charged_once(seams, placed.aggregate_id)

    async with upgraded(settings) as seams:
        await seams.runtime.bus.transport.publish(placed)  # the same v1 envelope, again
        await charged_once(seams, placed.aggregate_id)
        assert seams.runtime.bus.stats[("OrderPlaced", "payments", "handled")] == 1


async def test_replaying_a_v1_dead_letter_after_the_upgrade_completes_its_order_once(
    tmp_path: Path,
) -> None:
    """Dead-lettered by payments before the upgrade (its card processor was down), replayed
    through the admin API after it."""
    settings = on_disk(tmp_path)
    user = await registered_user(settings)
    placed = await old_order(settings, user["id"], in_outbox=False)
    letters = DeliveryStore(settings.store_url("bus"))
    await letters.open()
    try:
        letter = await letters.add_dead_letter(
            "payments", placed, "ProcessorUnavailable('the card network is down')", 5
        )
    finally:
        await letters.close()

    async with upgraded(settings) as seams:
        [listed] = (await seams.get("/api/admin/dead-letters"))["items"]
        replayed = await seams.client.post(f"/api/admin/dead-letters/{letter.id}/replay")
        again = await seams.client.post(f"/api/admin/dead-letters/{letter.id}/replay")
        await charged_once(seams, placed.aggregate_id)
        [notice] = await seams.all_pages("/api/notifications", order_id=placed.aggregate_id)

    assert (listed["id"], listed["envelope"]["version"]) == (letter.id, 1)
    assert replayed.status_code == 202, replayed.text
    assert again.status_code == 404, again.text  # replayed once: the letter is gone
    assert notice["kind"] == "payment_succeeded"


async def test_a_v1_order_placed_parked_before_the_upgrade_is_charged_once_on_start(
    tmp_path: Path,
) -> None:
    """Parked behind a dead letter of its order; the process stopped in the middle of
    releasing it (the letter gone, the parked event not yet delivered)."""
    settings = on_disk(tmp_path)
    user = await registered_user(settings)
    placed = await old_order(settings, user["id"], in_outbox=False)
    parking = DeliveryStore(settings.store_url("bus"))
    await parking.open()
    try:
        await parking.park("payments", placed)
    finally:
        await parking.close()

    async with upgraded(settings) as seams:  # released when the bus starts
        await charged_once(seams, placed.aggregate_id)
        assert await seams.runtime.bus.store.parked_for("payments", placed.aggregate_id) == []


@pytest.mark.services
async def test_a_v1_order_placed_waiting_in_the_jetstream_stream_is_charged_once(
    tmp_path: Path,
) -> None:
    with nats_server(tmp_path / "nats") as broker:
        settings = on_disk(tmp_path, bus_url=broker.url)
        user = await registered_user(settings)  # declares the stream and the consumers
        placed = await old_order(settings, user["id"], in_outbox=False)
        await publish_alone(broker.url, [placed])  # stored while payments is stopped

        async with upgraded(settings) as seams:
            await charged_once(seams, placed.aggregate_id)
            assert seams.runtime.bus.stats[("OrderPlaced", "payments", "handled")] == 1
