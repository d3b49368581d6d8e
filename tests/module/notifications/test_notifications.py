"""The notifications module booted alone behind the gateway, fed users' and payments' events
as those modules would publish them: it keeps a replica of users' contacts, ordered by the
users' event sequence, and records one email per payment fact, retrying a payment whose
contact has not arrived yet. It publishes nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.bus.envelope import Envelope, wrap
from app.kernel.ids import new_id
from app.modules.notifications.module import module as notifications_module
from app.modules.notifications.money import format_amount
from app.modules.notifications.store import NotificationsStore
from app.modules.payments.contracts import PaymentRefunded, PaymentSucceeded
from app.modules.users.contracts import UserRegistered, UserUpdated
from tests.support.scenario import Scenario, scenario
from tests.support.work import HandedOff


@pytest.fixture
async def notifications(anyio_backend: str) -> AsyncIterator[Scenario]:
    async with scenario(notifications_module) as alone:
        yield alone


async def register(
    notifications: Scenario,
    email: str = "ada@example.com",
    *,
    name: str = "Ada",
    user_id: str | None = None,
) -> str:
    """A user's contact arrives, as the users module publishes it on registration."""
    user_id = user_id or new_id()
    registered = UserRegistered(
        user_id=user_id, name=name, email=email, registered_at="2025-01-01T00:00:00Z"
    )
    await notifications.deliver(registered, producer="users", aggregate_id=user_id, sequence=1)
    await notifications.settle()
    return user_id


async def change_email(
    notifications: Scenario, user_id: str, email: str, *, sequence: int = 2, name: str = "Ada"
) -> None:
    updated = UserUpdated(user_id=user_id, name=name, email=email)
    await notifications.deliver(updated, producer="users", aggregate_id=user_id, sequence=sequence)
    await notifications.settle()


def succeeded(
    user_id: str, order_id: str, *, amount: int = 1250, currency: str = "EUR"
) -> PaymentSucceeded:
    return PaymentSucceeded(
        payment_id=new_id(), order_id=order_id, user_id=user_id, amount=amount, currency=currency
    )


async def pay(
    notifications: Scenario,
    user_id: str,
    order_id: str | None = None,
    *,
    amount: int = 1250,
    currency: str = "EUR",
) -> Envelope:
    """A payment for the user's order succeeds, as the payments module publishes it."""
    event = succeeded(user_id, order_id or new_id(), amount=amount, currency=currency)
    envelope = await notifications.deliver(
        event, producer="payments", aggregate_id=event.payment_id
    )
    await notifications.settle()
    return envelope


async def listed(notifications: Scenario, **query: Any) -> dict[str, Any]:
    response = await notifications.client.get("/api/notifications", params=query)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


@pytest.mark.anyio
async def test_payment_succeeded_records_one_email_to_the_users_address(
    notifications: Scenario, caplog: pytest.LogCaptureFixture
) -> None:
    user_id = await register(notifications, "ada@example.com")
    order_id = new_id()

    with caplog.at_level(logging.INFO, logger="app.modules.notifications"):
        await pay(notifications, user_id, order_id, amount=1250, currency="EUR")

    [notification] = (await listed(notifications))["items"]
    assert notification["user_id"] == user_id
    assert notification["order_id"] == order_id
    assert notification["kind"] == "payment_succeeded"
    assert notification["channel"] == "email"
    assert notification["to"] == "ada@example.com"
    assert "12.50 EUR" in notification["body"]
    sent = [r.getMessage() for r in caplog.records if r.name == "app.modules.notifications"]
    assert sent == [
        f"email to user {user_id} (notification {notification['id']}): {notification['subject']}"
    ]  # the address is in the record, never in the log
    assert notifications.published_events() == []


@pytest.mark.anyio
async def test_payment_refunded_records_a_refund_notification(notifications: Scenario) -> None:
    user_id = await register(notifications)
    order_id, payment_id = new_id(), new_id()
    refunded = PaymentRefunded(
        payment_id=payment_id, order_id=order_id, user_id=user_id, amount=1250, currency="JPY"
    )

    await notifications.deliver(refunded, producer="payments", aggregate_id=payment_id)
    await notifications.settle()

    [notification] = (await listed(notifications))["items"]
    assert notification["kind"] == "payment_refunded"
    assert notification["order_id"] == order_id
    assert "1250 JPY" in notification["body"]


@pytest.mark.anyio
async def test_duplicate_delivery_records_one_notification(notifications: Scenario) -> None:
    user_id = await register(notifications)
    envelope = await pay(notifications, user_id)

    await notifications.redeliver(envelope)
    await notifications.settle()

    assert len((await listed(notifications))["items"]) == 1
    store: NotificationsStore = notifications.store
    kept = await store.page(user_id=user_id, order_id=None, after=None, limit=10)
    assert [row.order_id for row in kept] == [envelope.payload["order_id"]]
    stats = notifications.seams.runtime.bus.stats
    assert stats[("PaymentSucceeded", "notifications", "handled")] == 2


@pytest.mark.anyio
async def test_second_event_of_the_same_kind_for_an_order_records_nothing_new(
    notifications: Scenario,
) -> None:
    user_id = await register(notifications)
    order_id = new_id()

    await pay(notifications, user_id, order_id)
    await pay(notifications, user_id, order_id)

    assert len((await listed(notifications))["items"]) == 1
    assert await notifications.seams.runtime.bus.store.count_dead_letters() == 0


@pytest.mark.anyio
async def test_newer_user_update_changes_the_address_of_the_next_notification(
    notifications: Scenario,
) -> None:
    user_id = await register(notifications, "old@example.com")

    await change_email(notifications, user_id, "new@example.com", sequence=2)
    await pay(notifications, user_id)

    [notification] = (await listed(notifications))["items"]
    assert notification["to"] == "new@example.com"


@pytest.mark.anyio
async def test_stale_user_update_does_not_overwrite_a_newer_address(
    notifications: Scenario,
) -> None:
    user_id = await register(notifications, "old@example.com")
    await change_email(notifications, user_id, "new@example.com", sequence=2)

    await change_email(notifications, user_id, "stale@example.com", sequence=1)
    await pay(notifications, user_id)

    [notification] = (await listed(notifications))["items"]
    assert notification["to"] == "new@example.com"


@pytest.mark.anyio
async def test_payment_for_a_contact_not_yet_known_waits_for_it_then_is_recorded(
    anyio_backend: str,
) -> None:
    # "Not yet" (docs/decisions/0032): the payment waits for the contact, spending no attempt.
    async with scenario(notifications_module, bus_max_attempts="2") as notifications:
        bus = notifications.seams.runtime.bus
        user_id = new_id()
        event = succeeded(user_id, new_id())
        # Delivery returns only once the payment is handled: it waits for the contact.
        payment = asyncio.create_task(
            notifications.deliver(event, producer="payments", aggregate_id=event.payment_id)
        )
        try:
            await asyncio.sleep(0.3)  # the payment is waiting by now
            assert not payment.done()
            await register(notifications, "late@example.com", name="Late", user_id=user_id)
            await asyncio.wait_for(payment, 5)
        finally:
            payment.cancel()  # nothing once it is done; never left running past the test
        await notifications.settle()

        [notification] = (await listed(notifications))["items"]
        assert notification["to"] == "late@example.com"
        assert bus.stats[("PaymentSucceeded", "notifications", "failed")] == 0
        assert bus.stats[("PaymentSucceeded", "notifications", "handled")] == 1
        assert await bus.store.count_dead_letters() == 0


@pytest.mark.anyio
async def test_list_filters_by_user_and_order_and_pages_with_cursor(
    notifications: Scenario,
) -> None:
    ada = await register(notifications, "ada@example.com")
    bob = await register(notifications, "bob@example.com", name="Bob")
    ada_orders = [new_id() for _ in range(3)]
    for order_id in ada_orders:
        await pay(notifications, ada, order_id)
    await pay(notifications, bob)

    first = await listed(notifications, user_id=ada, limit=2)
    second = await listed(notifications, user_id=ada, limit=2, cursor=first["next_cursor"])
    by_order = await listed(notifications, order_id=ada_orders[1])
    bobs = await listed(notifications, user_id=bob)

    assert [n["order_id"] for n in first["items"] + second["items"]] == ada_orders
    assert first["next_cursor"] == first["items"][-1]["id"]
    assert second["next_cursor"] is None
    assert [n["order_id"] for n in by_order["items"]] == [ada_orders[1]]
    assert [n["to"] for n in bobs["items"]] == ["bob@example.com"]


@pytest.mark.anyio
async def test_get_notification_answers_the_one_listed(notifications: Scenario) -> None:
    user_id = await register(notifications)
    await pay(notifications, user_id)
    [listed_one] = (await listed(notifications))["items"]

    response = await notifications.client.get(f"/api/notifications/{listed_one['id']}")

    assert response.status_code == 200
    assert response.json() == listed_one


@pytest.mark.anyio
async def test_unknown_notification_is_a_404_problem(notifications: Scenario) -> None:
    response = await notifications.client.get(f"/api/notifications/{new_id()}")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404


@pytest.mark.anyio
async def test_a_filter_longer_than_64_characters_is_refused(notifications: Scenario) -> None:
    response = await notifications.client.get("/api/notifications", params={"user_id": "u" * 65})

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.anyio
async def test_the_inbox_claims_an_envelope_once_and_a_failure_undoes_the_claim(
    anyio_backend: str,
) -> None:
    store = NotificationsStore("sqlite+aiosqlite:///:memory:")
    await store.open()
    event = succeeded(new_id(), new_id())
    envelope = wrap(
        event,
        producer="payments",
        aggregate_id=event.payment_id,
        sequence=1,
        correlation_id="c1",
        causation_id=None,
    )
    bus = HandedOff("notifications")
    try:
        with pytest.raises(RuntimeError):
            async with store.unit_of_work(bus, cause=envelope) as work:
                assert not work.handled_before
                raise RuntimeError("the effect failed")
        assert not work.committed
        async with store.unit_of_work(bus, cause=envelope) as work:
            assert not work.handled_before  # the failed attempt left no claim behind
        assert work.committed
        async with store.unit_of_work(bus, cause=envelope) as work:
            assert work.handled_before  # handled: a redelivery does nothing
        assert not work.committed
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("amount", "currency", "written"),
    [
        (1250, "EUR", "12.50 EUR"),
        (5, "usd", "0.05 USD"),
        (1250, "JPY", "1250 JPY"),
        (1250, "KWD", "1.250 KWD"),
        (0, "EUR", "0.00 EUR"),
    ],
)
def test_amounts_are_written_with_the_currencys_minor_unit(
    amount: int, currency: str, written: str
) -> None:
    assert format_amount(amount, currency) == written
