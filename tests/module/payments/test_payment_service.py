"""The payments module booted alone behind the gateway, fed order events as orders would
publish them: one charge per order however often it is told, retries it gives up on, and
refunds for cancelled orders that never keep the customer's money
(docs/decisions/0007-simulated-processor.md and 0008-cancel.md)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.bus.envelope import Envelope, wrap
from app.kernel.ids import new_id, utcnow
from app.modules.orders.contracts import OrderCancelled, OrderPlaced
from app.modules.payments.contracts import PaymentFailed
from app.modules.payments.module import module as payments_module
from app.modules.payments.payment import Payment, PaymentStatus
from app.modules.payments.processor import ChargeResult, Outcome
from app.modules.payments.store import PaymentsStore
from tests.support.logs import watching
from tests.support.scenario import Scenario, scenario
from tests.support.work import HandedOff

pytestmark = pytest.mark.anyio

TOTAL = 1250


@pytest.fixture
async def payments(anyio_backend: str) -> AsyncIterator[Scenario]:
    async with scenario(payments_module) as alone:
        yield alone


def placed(order_id: str, token: str = "tok_visa") -> Envelope:
    event = OrderPlaced(
        order_id=order_id,
        user_id="user-1",
        total=TOTAL,
        currency="EUR",
        payment_token=token,
        item_count=1,
    )
    return wrap(
        event,
        producer="orders",
        aggregate_id=order_id,
        sequence=1,
        correlation_id="c",
        causation_id=None,
    )


def cancelled(order_id: str, status_when_cancelled: str = "PAID") -> Envelope:
    event = OrderCancelled(
        order_id=order_id, user_id="user-1", status_when_cancelled=status_when_cancelled
    )
    return wrap(
        event,
        producer="orders",
        aggregate_id=order_id,
        sequence=2,
        correlation_id="c",
        causation_id=None,
    )


async def deliver(payments: Scenario, *envelopes: Envelope) -> None:
    for envelope in envelopes:
        await payments.redeliver(envelope)
    await payments.settle()


async def payments_for(payments: Scenario, order_id: str) -> list[dict[str, Any]]:
    return await payments.seams.all_pages("/api/payments", order_id=order_id)


async def ledger(payments: Scenario) -> tuple[int, int]:
    """(captured, refunded) as the simulated processor's own books say."""
    store: PaymentsStore = payments.store
    return await store.ledger_totals()


def published(payments: Scenario) -> list[str]:
    return [envelope.type for envelope in payments.published]


async def test_visa_order_is_captured_once_and_succeeds(payments: Scenario) -> None:
    order_id = new_id()

    await deliver(payments, placed(order_id))

    [payment] = await payments_for(payments, order_id)
    assert (payment["status"], payment["amount"], payment["attempts"]) == ("SUCCEEDED", TOTAL, 1)
    assert await ledger(payments) == (TOTAL, 0)
    assert published(payments) == ["PaymentSucceeded"]


async def test_the_same_order_placed_delivered_twice_makes_one_payment_and_one_capture(
    payments: Scenario,
) -> None:
    order_id = new_id()
    envelope = placed(order_id)

    await deliver(payments, envelope, envelope)

    [payment] = await payments_for(payments, order_id)
    assert (payment["status"], payment["attempts"]) == ("SUCCEEDED", 1)
    assert await ledger(payments) == (TOTAL, 0)
    assert published(payments) == ["PaymentSucceeded"]
    assert payments.seams.runtime.bus.stats[("OrderPlaced", "payments", "handled")] == 2


async def test_a_second_order_placed_for_the_same_order_under_a_new_id_changes_nothing(
    payments: Scenario,
) -> None:
    order_id = new_id()

    await deliver(payments, placed(order_id), placed(order_id))

    assert len(await payments_for(payments, order_id)) == 1
    assert await ledger(payments) == (TOTAL, 0)
    assert published(payments) == ["PaymentSucceeded"]


async def test_concurrent_deliveries_of_one_order_placed_capture_once(
    payments: Scenario,
) -> None:
    envelope = placed(new_id())

    await asyncio.gather(*(payments.redeliver(envelope) for _ in range(3)))
    await payments.settle()

    assert len(await payments.seams.all_pages("/api/payments")) == 1
    assert await ledger(payments) == (TOTAL, 0)
    assert published(payments) == ["PaymentSucceeded"]


async def test_a_declined_card_fails_the_payment_at_once(payments: Scenario) -> None:
    order_id = new_id()

    await deliver(payments, placed(order_id, "tok_chargeDeclined"))

    [payment] = await payments_for(payments, order_id)
    assert (payment["status"], payment["failure_reason"], payment["attempts"]) == (
        "FAILED",
        "card_declined",
        1,
    )
    assert await ledger(payments) == (0, 0)
    [failed] = payments.published_events()
    assert isinstance(failed, PaymentFailed)
    assert failed.reason == "card_declined"


async def test_a_processing_error_is_retried_until_captured_on_the_third_attempt(
    payments: Scenario,
) -> None:
    order_id = new_id()

    await deliver(payments, placed(order_id, "tok_processing_error"))

    [payment] = await payments_for(payments, order_id)
    assert (payment["status"], payment["attempts"]) == ("SUCCEEDED", 3)
    assert await ledger(payments) == (TOTAL, 0)
    assert published(payments) == ["PaymentSucceeded"]


async def test_a_processing_error_gives_up_after_the_configured_attempts(
    anyio_backend: str,
) -> None:
    async with scenario(payments_module, payment_max_attempts="2") as payments:
        order_id = new_id()

        await deliver(payments, placed(order_id, "tok_processing_error"))

        [payment] = await payments_for(payments, order_id)
        assert (payment["status"], payment["attempts"]) == ("FAILED", 2)
        assert "gave up after 2 attempts" in payment["failure_reason"]
        assert await ledger(payments) == (0, 0)
        [failed] = payments.published_events()
        assert isinstance(failed, PaymentFailed)
        assert "gave up after 2 attempts" in failed.reason


async def test_cancelling_a_succeeded_payment_refunds_it_once_even_when_told_twice(
    payments: Scenario,
) -> None:
    order_id = new_id()
    await deliver(payments, placed(order_id))
    cancel = cancelled(order_id, "PAID")

    await deliver(payments, cancel, cancel)

    [payment] = await payments_for(payments, order_id)
    assert payment["status"] == "REFUNDED"
    assert await ledger(payments) == (TOTAL, TOTAL)
    assert published(payments) == ["PaymentSucceeded", "PaymentRefunded"]


async def test_a_second_cancel_under_a_new_id_does_not_refund_again(
    payments: Scenario,
) -> None:
    order_id = new_id()
    await deliver(payments, placed(order_id))

    await deliver(payments, cancelled(order_id), cancelled(order_id))

    assert [p["status"] for p in await payments_for(payments, order_id)] == ["REFUNDED"]
    assert await ledger(payments) == (TOTAL, TOTAL)
    assert published(payments) == ["PaymentSucceeded", "PaymentRefunded"]


async def test_cancelling_a_declined_payment_leaves_it_failed_and_refunds_nothing(
    payments: Scenario,
) -> None:
    order_id = new_id()
    await deliver(payments, placed(order_id, "tok_chargeDeclined"))

    await deliver(payments, cancelled(order_id, "CANCELLED"))

    [payment] = await payments_for(payments, order_id)
    assert (payment["status"], payment["failure_reason"]) == ("FAILED", "card_declined")
    assert await ledger(payments) == (0, 0)
    assert published(payments) == ["PaymentFailed"]


async def test_a_cancel_for_an_order_payments_never_saw_changes_no_payment(
    payments: Scenario,
) -> None:
    await deliver(payments, cancelled(new_id(), "PENDING"))

    assert await payments.seams.all_pages("/api/payments") == []
    assert published(payments) == []
    assert payments.seams.runtime.bus.stats[("OrderCancelled", "payments", "failed")] == 0


async def test_a_cancel_that_overtook_its_order_placed_means_the_order_is_never_charged(
    payments: Scenario,
) -> None:
    # Over a broker, OrderPlaced and OrderCancelled travel on two consumers: the cancel
    # can arrive first. The processor voids the order, so the late OrderPlaced charges nothing.
    order_id = new_id()
    await deliver(payments, cancelled(order_id, "PENDING"), placed(order_id))

    [payment] = await payments_for(payments, order_id)
    assert (payment["status"], payment["failure_reason"]) == ("FAILED", "order_cancelled")
    assert await ledger(payments) == (0, 0)
    assert published(payments) == ["PaymentFailed"]


async def test_cancelling_during_a_slow_charge_never_keeps_the_money(anyio_backend: str) -> None:
    async with scenario(payments_module, slow_card_seconds="0.2") as payments:
        order_id = new_id()
        await payments.redeliver(placed(order_id, "tok_slow"))

        await deliver(payments, cancelled(order_id, "PENDING"))

        [payment] = await payments_for(payments, order_id)
        assert (payment["status"], payment["failure_reason"]) in (
            ("FAILED", "order_cancelled"),
            ("REFUNDED", None),
        )
        captured, refunded = await ledger(payments)
        assert captured - refunded == 0
        assert published(payments) in (
            ["PaymentFailed"],
            ["PaymentSucceeded", "PaymentRefunded"],
        )


async def test_cancelling_between_retries_stops_them_without_a_capture(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    # A backoff long enough that the cancel surely lands while the charge waits to retry.
    slow_retries = {"payment_retry_base_seconds": "0.2", "bus_retry_max_seconds": "0.2"}
    caplog.set_level(logging.INFO, logger="app.modules.payments")
    with watching("app.modules.payments", "processing_error, retrying") as first_failure:
        async with scenario(payments_module, **slow_retries) as payments:
            order_id = new_id()
            await payments.redeliver(placed(order_id, "tok_processing_error"))
            await asyncio.wait_for(first_failure.wait(), 5)

            await deliver(payments, cancelled(order_id, "PENDING"))

            [payment] = await payments_for(payments, order_id)
            assert (payment["status"], payment["failure_reason"], payment["attempts"]) == (
                "FAILED",
                "order_cancelled",
                1,
            )
            assert await ledger(payments) == (0, 0)
            assert published(payments) == ["PaymentFailed"]


async def test_a_capture_a_crash_left_unrecorded_is_refunded_when_the_order_is_cancelled(
    payments: Scenario,
) -> None:
    """The processor captured, then the process died before the payment said so: the
    payment is PROCESSING, the ledger says captured. A cancel must not keep the money."""
    store: PaymentsStore = payments.store
    now = utcnow()
    left = Payment(
        id=new_id(), order_id="o-crash", user_id="u1", amount=1250, currency="EUR",
        token="tok_visa", status=PaymentStatus.PROCESSING, attempts=0, failure_reason=None,
        event_sequence=0, created_at=now, updated_at=now,
    )  # fmt: skip
    async with store.unit_of_work(HandedOff("payments"), cause=placed("o-crash")) as work:
        assert await store.open_payment(work, left)
    await store.count_attempt("o-crash", 1250, "EUR", "tok_visa")
    await store.settle_charge("o-crash", ChargeResult(Outcome.AUTHORISED))
    await store.capture_charge("o-crash")

    await deliver(payments, cancelled("o-crash", status_when_cancelled="PENDING"))

    assert [(p["status"], p["attempts"]) for p in await payments_for(payments, "o-crash")] == [
        ("REFUNDED", 1)
    ]
    assert await ledger(payments) == (1250, 1250)
    assert published(payments) == ["PaymentSucceeded", "PaymentRefunded"]


async def test_a_cancel_during_a_slow_authorisation_voids_it_without_waiting_for_it(
    anyio_backend: str,
) -> None:
    # The card network takes 30 s: a cancel that waited for it (a lock held across the
    # authorisation) would not finish within the 5 s below.
    async with scenario(payments_module, slow_card_seconds="30") as payments:
        store: PaymentsStore = payments.store
        order_id = new_id()
        await payments.redeliver(placed(order_id, "tok_slow"))
        deadline = time.monotonic() + 5
        while await store.ledger_entry(order_id) != (None, False):  # asked, not answered
            assert time.monotonic() < deadline, "the authorisation never reached the processor"
            await asyncio.sleep(0.005)

        await asyncio.wait_for(payments.redeliver(cancelled(order_id, "PENDING")), 5)

        [payment] = await payments_for(payments, order_id)
        assert (payment["status"], payment["failure_reason"]) == ("FAILED", "order_cancelled")
        assert await store.ledger_entry(order_id) == ("voided", False)
        assert await ledger(payments) == (0, 0)


async def test_a_cancel_after_authorisation_voids_it_and_a_later_charge_captures_nothing(
    payments: Scenario,
) -> None:
    """A process authorised the order and died before capturing it: the cancel voids the
    authorisation, so adopting the charge afterwards finds nothing to capture."""
    store: PaymentsStore = payments.store
    now = utcnow()
    left = Payment(
        id=new_id(), order_id="o-authorised", user_id="u1", amount=TOTAL, currency="EUR",
        token="tok_visa", status=PaymentStatus.PROCESSING, attempts=0, failure_reason=None,
        event_sequence=0, created_at=now, updated_at=now,
    )  # fmt: skip
    async with store.unit_of_work(HandedOff("payments"), cause=placed("o-authorised")) as work:
        assert await store.open_payment(work, left)
    await store.count_attempt("o-authorised", TOTAL, "EUR", "tok_visa")
    await store.settle_charge("o-authorised", ChargeResult(Outcome.AUTHORISED))

    await deliver(payments, cancelled("o-authorised", status_when_cancelled="PENDING"))

    [payment] = await payments_for(payments, "o-authorised")
    assert (payment["status"], payment["failure_reason"]) == ("FAILED", "order_cancelled")
    assert await store.ledger_entry("o-authorised") == ("voided", False)
    assert await store.capture_charge("o-authorised") == ChargeResult(
        Outcome.VOIDED, "order_cancelled"
    )
    assert await ledger(payments) == (0, 0)
    assert published(payments) == ["PaymentFailed"]
