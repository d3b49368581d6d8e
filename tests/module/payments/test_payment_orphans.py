"""A charge whose process died is adopted by a payments process that lives.

In split mode a payments replica acks OrderPlaced once the payment is open and charges in
the background; SIGKILLed meanwhile, it leaves the payment PROCESSING with no message for
the broker to deliver again. Every payments process therefore adopts the PROCESSING
payments nobody has written for longer than a live charge ever leaves one, and the
processor's ledger still captures each order at most once.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import anyio
import pytest

from app.kernel.ids import new_id, utcnow
from app.modules.payments.module import module as payments_module
from app.modules.payments.module import orphaned_after
from app.modules.payments.payment import Payment, PaymentStatus
from app.modules.payments.service import PaymentService
from app.modules.payments.store import PaymentsStore
from app.modules.payments.views import PlacedOrder
from tests.module.payments.test_payment_service import placed
from tests.support.scenario import Scenario, scenario
from tests.support.work import HandedOff

pytestmark = pytest.mark.anyio

TOTAL = 1250
# No slow card, no retry delay: a payment untouched for 5 s is abandoned; looked for every 2.5 s.
QUICK = {"slow_card_seconds": "0", "payment_retry_max_seconds": "0"}


@pytest.fixture
async def payments(anyio_backend: str) -> AsyncIterator[Scenario]:
    """With the default retry ceiling: abandoned after 15 s, looked for every 7.5 s, so
    only the test adopts anything here."""
    async with scenario(payments_module) as alone:
        yield alone


def service_of(payments: Scenario) -> PaymentService:
    """The service the module assembled (its OrderPlaced handler is a bound method of it)."""
    running = next(m for m in payments.seams.runtime.modules if m.module is payments_module)
    handler: Any = running.assembly.handlers[PlacedOrder]
    service: PaymentService = handler.__self__
    return service


async def left_processing(payments: Scenario, order_id: str, *, untouched_for: float) -> None:
    """A payment another process opened and stopped writing `untouched_for` seconds ago."""
    store: PaymentsStore = payments.store
    then = utcnow() - timedelta(seconds=untouched_for)
    row = Payment(
        id=new_id(), order_id=order_id, user_id="user-1", amount=TOTAL, currency="EUR",
        token="tok_visa", status=PaymentStatus.PROCESSING, attempts=0, failure_reason=None,
        event_sequence=0, created_at=then, updated_at=then,
    )  # fmt: skip
    async with store.unit_of_work(HandedOff("payments"), cause=placed(order_id)) as work:
        assert await store.open_payment(work, row)


async def statuses(payments: Scenario, order_id: str) -> list[tuple[str, int]]:
    found = await payments.seams.all_pages("/api/payments", order_id=order_id)
    return [(p["status"], p["attempts"]) for p in found]


def test_the_horizon_leaves_room_for_a_retry_delay_and_a_slow_card() -> None:
    assert orphaned_after(slow_card_seconds=0.25, retry_max_seconds=5) == 15.5
    assert orphaned_after(slow_card_seconds=0, retry_max_seconds=0) == 5.0


async def test_an_abandoned_charge_is_adopted_and_captured_once(payments: Scenario) -> None:
    await left_processing(payments, "o-abandoned", untouched_for=60)
    service = service_of(payments)

    assert await service.adopt_orphans() == 1
    await payments.settle()

    assert await statuses(payments, "o-abandoned") == [("SUCCEEDED", 1)]
    assert [e.type for e in payments.published] == ["PaymentSucceeded"]
    assert await payments.store.ledger_totals() == (TOTAL, 0)
    assert await service.adopt_orphans() == 0  # settled: nothing left to adopt


async def test_a_charge_written_recently_is_left_to_its_process(payments: Scenario) -> None:
    await left_processing(payments, "o-alive", untouched_for=1)

    assert await service_of(payments).adopt_orphans() == 0

    assert await statuses(payments, "o-alive") == [("PROCESSING", 0)]
    assert payments.published == []


@pytest.mark.slow  # it looks every 2.5 s: the test waits for one look
async def test_a_running_payments_process_looks_for_abandoned_charges_by_itself(
    anyio_backend: str,
) -> None:
    async with scenario(payments_module, **QUICK) as payments:
        await left_processing(payments, "o-orphan", untouched_for=60)

        deadline = time.monotonic() + 10  # looked for every 2.5 s here
        while await statuses(payments, "o-orphan") != [("SUCCEEDED", 1)]:
            assert time.monotonic() < deadline, await statuses(payments, "o-orphan")
            await anyio.sleep(0.05)
        await payments.settle()
        assert [e.type for e in payments.published] == ["PaymentSucceeded"]
