"""The card processor's fault switches (issue 14, point 6): a share of authorisations
declined or failing transiently whatever the token, and a slow card network for every
authorisation. A faulty answer is still the order's one answer in the ledger."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest

from app.modules.payments.processor import CardProcessor, ChargeResult, Outcome, ProcessorFaults
from app.modules.payments.store import PaymentsStore

pytestmark = pytest.mark.anyio

AUTHORISED = ChargeResult(Outcome.AUTHORISED)
CAPTURED = ChargeResult(Outcome.CAPTURED)
DECLINED = ChargeResult(Outcome.DECLINED, "card_declined")
TRANSIENT = ChargeResult(Outcome.TRANSIENT, "processing_error")
VOIDED = ChargeResult(Outcome.VOIDED, "order_cancelled")


@pytest.fixture
async def ledger(anyio_backend: str) -> AsyncIterator[PaymentsStore]:
    store = PaymentsStore("sqlite:///:memory:")
    await store.open()
    try:
        yield store
    finally:
        await store.close()


def processor_with(ledger: PaymentsStore, faults: ProcessorFaults) -> CardProcessor:
    return CardProcessor(ledger, slow_seconds=0, faults=faults, chance=random.Random(14))


async def authorise(
    processor: CardProcessor, order_id: str, token: str = "tok_visa"
) -> ChargeResult:
    return await processor.authorise(order_id=order_id, amount=1250, currency="EUR", token=token)


async def test_with_every_fault_off_each_token_answers_as_usual(ledger: PaymentsStore) -> None:
    processor = processor_with(ledger, ProcessorFaults())

    answers = [
        await authorise(processor, "o-1", "tok_visa"),
        await authorise(processor, "o-2", "tok_chargeDeclined"),
        await authorise(processor, "o-3", "tok_processing_error"),
    ]

    assert answers == [AUTHORISED, DECLINED, TRANSIENT]


async def test_decline_rate_one_declines_every_card_and_the_decline_is_the_orders_answer(
    ledger: PaymentsStore,
) -> None:
    faults = ProcessorFaults(decline_rate=1.0)
    processor = processor_with(ledger, faults)

    first = [await authorise(processor, f"o-{n}") for n in range(5)]
    faults.decline_rate = 0.0
    asked_again = await authorise(processor, "o-1")  # a retry or redelivery, fault now off

    assert first == [DECLINED] * 5
    assert asked_again == DECLINED  # settled in the ledger: the order is declined for good
    assert await processor.capture("o-1") == DECLINED
    assert await ledger.ledger_totals() == (0, 0)


async def test_transient_rate_one_fails_every_attempt_until_it_is_switched_off(
    ledger: PaymentsStore,
) -> None:
    faults = ProcessorFaults(transient_rate=1.0)
    processor = processor_with(ledger, faults)

    while_on = [await authorise(processor, "o-1") for _ in range(3)]
    assert await ledger.ledger_entry("o-1") == (None, False)  # asked, never answered
    faults.transient_rate = 0.0
    after = await authorise(processor, "o-1")

    assert while_on == [TRANSIENT] * 3
    assert after == AUTHORISED
    assert await processor.capture("o-1") == CAPTURED
    assert await ledger.ledger_totals() == (1250, 0)


async def test_a_decline_wins_over_a_transient_error_when_both_hit(ledger: PaymentsStore) -> None:
    processor = processor_with(ledger, ProcessorFaults(decline_rate=1.0, transient_rate=1.0))

    assert await authorise(processor, "o-1") == DECLINED


async def test_a_rate_between_hits_about_that_share_of_orders(ledger: PaymentsStore) -> None:
    processor = processor_with(ledger, ProcessorFaults(decline_rate=0.3))

    answers = [await authorise(processor, f"o-{n}") for n in range(200)]

    declined = answers.count(DECLINED)
    assert 40 <= declined <= 80, declined  # 60 expected; the seed makes it repeatable
    assert answers.count(AUTHORISED) == 200 - declined


async def test_slow_card_seconds_delays_every_authorisation(ledger: PaymentsStore) -> None:
    processor = processor_with(ledger, ProcessorFaults(slow_seconds=0.2))

    started = time.monotonic()
    answers = await asyncio.gather(*(authorise(processor, f"o-{n}") for n in range(3)))
    took = time.monotonic() - started

    assert answers == [AUTHORISED] * 3
    assert 0.2 <= took < 2.0  # every one waited; in parallel, within the processor's slots


async def test_without_the_slow_fault_a_visa_card_does_not_wait(ledger: PaymentsStore) -> None:
    processor = CardProcessor(ledger, slow_seconds=30, faults=ProcessorFaults())

    answer = await asyncio.wait_for(authorise(processor, "o-1", "tok_visa"), 5)

    assert answer == AUTHORISED  # only tok_slow waits APP_SLOW_CARD_SECONDS


async def test_a_cancel_during_a_slow_card_voids_the_order_before_any_money_moves(
    ledger: PaymentsStore,
) -> None:
    processor = processor_with(ledger, ProcessorFaults(slow_seconds=0.3))
    slow = asyncio.ensure_future(authorise(processor, "o-1"))
    for _ in range(1000):  # bounded: until the request has reached the processor
        if await ledger.ledger_entry("o-1") is not None:
            break
        await asyncio.sleep(0)

    assert await asyncio.wait_for(processor.void("o-1"), 5) == VOIDED
    assert await slow == VOIDED  # its late answer loses to the void
    assert await ledger.ledger_totals() == (0, 0)
