"""The simulated card processor: what each test token's authorisation answers, and its
ledger, which never captures an order twice, never captures a voided one, nor counts a
refund twice (docs/decisions/0007-simulated-processor.md)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.modules.payments.processor import CardProcessor, ChargeResult, Outcome, decide
from app.modules.payments.store import PaymentsStore

AUTHORISED = ChargeResult(Outcome.AUTHORISED)
CAPTURED = ChargeResult(Outcome.CAPTURED)
DECLINED = ChargeResult(Outcome.DECLINED, "card_declined")
TRANSIENT = ChargeResult(Outcome.TRANSIENT, "processing_error")
INVALID = ChargeResult(Outcome.DECLINED, "invalid_token")


@pytest.mark.parametrize(
    ("token", "answers"),
    [
        ("tok_visa", [AUTHORISED, AUTHORISED, AUTHORISED, AUTHORISED]),
        ("tok_slow", [AUTHORISED, AUTHORISED, AUTHORISED, AUTHORISED]),
        ("tok_chargeDeclined", [DECLINED, DECLINED, DECLINED, DECLINED]),
        ("tok_processing_error", [TRANSIENT, TRANSIENT, AUTHORISED, AUTHORISED]),
        ("tok_unknown", [INVALID, INVALID, INVALID, INVALID]),
        ("", [INVALID, INVALID, INVALID, INVALID]),
    ],
)
def test_each_token_decides_the_answer_for_attempts_one_to_four(
    token: str, answers: list[ChargeResult]
) -> None:
    assert [decide(token, attempt) for attempt in (1, 2, 3, 4)] == answers


# Both SQLite access paths: the stdlib driver on the loop, and aiosqlite in a thread.
@pytest.fixture(params=["sqlite:///:memory:", "sqlite+aiosqlite:///:memory:"])
async def ledger(
    anyio_backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[PaymentsStore]:
    store = PaymentsStore(request.param)
    await store.open()
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def processor(ledger: PaymentsStore) -> CardProcessor:
    return CardProcessor(ledger, slow_seconds=0)


async def authorise(processor: CardProcessor, order_id: str, token: str) -> ChargeResult:
    return await processor.authorise(order_id=order_id, amount=1250, currency="EUR", token=token)


async def charge(processor: CardProcessor, order_id: str, token: str) -> ChargeResult:
    """Authorise, then capture what was authorised: a charge whose order is still wanted."""
    result = await authorise(processor, order_id, token)
    if result.outcome is Outcome.AUTHORISED:
        return await processor.capture(order_id)
    return result


@pytest.mark.anyio
async def test_charging_one_order_five_times_captures_it_once(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    answers = [await charge(processor, "order-1", "tok_visa") for _ in range(5)]

    assert answers == [CAPTURED] * 5
    assert await ledger.ledger_totals() == (1250, 0)


@pytest.mark.anyio
async def test_concurrent_charges_of_one_order_capture_it_once(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    answers = await asyncio.gather(*(charge(processor, "order-1", "tok_visa") for _ in range(5)))

    assert answers == [CAPTURED] * 5
    assert await ledger.ledger_totals() == (1250, 0)


@pytest.mark.anyio
async def test_each_order_is_captured_on_its_own(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    await charge(processor, "order-1", "tok_visa")
    await charge(processor, "order-2", "tok_slow")
    await charge(processor, "order-3", "tok_chargeDeclined")

    assert await ledger.ledger_totals() == (2 * 1250, 0)


@pytest.mark.anyio
async def test_processing_error_is_transient_twice_then_captured_once(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    answers = [await charge(processor, "order-1", "tok_processing_error") for _ in range(5)]

    assert answers == [TRANSIENT, TRANSIENT, CAPTURED, CAPTURED, CAPTURED]
    assert await ledger.ledger_totals() == (1250, 0)


@pytest.mark.anyio
async def test_a_declined_order_stays_declined_and_captures_nothing(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    answers = [await charge(processor, "order-1", "tok_chargeDeclined") for _ in range(3)]

    assert answers == [DECLINED] * 3
    assert await ledger.ledger_totals() == (0, 0)


@pytest.mark.anyio
async def test_a_refund_after_capture_is_counted_once_even_when_asked_twice(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    await charge(processor, "order-1", "tok_visa")

    first = await processor.refund("order-1")
    await processor.refund("order-1")

    assert first is True
    assert await ledger.ledger_totals() == (1250, 1250)


@pytest.mark.anyio
async def test_a_refunded_order_charged_again_is_not_captured_again(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    await charge(processor, "order-1", "tok_visa")
    await processor.refund("order-1")

    await charge(processor, "order-1", "tok_visa")

    assert await ledger.ledger_totals() == (1250, 1250)


@pytest.mark.anyio
async def test_refunding_a_declined_charge_returns_false(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    await charge(processor, "order-1", "tok_chargeDeclined")

    assert await processor.refund("order-1") is False
    assert await ledger.ledger_totals() == (0, 0)


@pytest.mark.anyio
async def test_refunding_an_order_never_charged_or_only_transiently_failed_returns_false(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    await charge(processor, "order-2", "tok_processing_error")

    assert await processor.refund("order-1") is False
    assert await processor.refund("order-2") is False
    assert await ledger.ledger_totals() == (0, 0)


VOIDED = ChargeResult(Outcome.VOIDED, "order_cancelled")


@pytest.mark.anyio
async def test_a_voided_order_is_never_captured_afterwards(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    assert await processor.void("order-1") == VOIDED
    answers = [await charge(processor, "order-1", "tok_visa") for _ in range(3)]

    assert answers == [VOIDED] * 3
    assert await ledger.ledger_totals() == (0, 0)


@pytest.mark.anyio
async def test_voiding_a_captured_order_answers_the_capture_and_keeps_it(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    await charge(processor, "order-1", "tok_visa")

    assert await processor.void("order-1") == CAPTURED
    assert await ledger.ledger_totals() == (1250, 0)


@pytest.mark.anyio
async def test_a_void_between_an_attempt_and_its_settlement_wins(ledger: PaymentsStore) -> None:
    # Another replica voids the order while this one is deciding its capture.
    attempt, settled = await ledger.count_attempt("order-1", 1250, "EUR", "tok_visa")
    assert (attempt, settled) == (1, None)
    await ledger.void_charge("order-1")

    assert await ledger.settle_charge("order-1", AUTHORISED) == VOIDED
    assert await ledger.ledger_totals() == (0, 0)


@pytest.mark.anyio
async def test_concurrent_charges_and_a_void_capture_at_most_once(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    answers = await asyncio.gather(
        *(charge(processor, "order-1", "tok_visa") for _ in range(3)),
        processor.void("order-1"),
        *(charge(processor, "order-1", "tok_visa") for _ in range(3)),
    )
    assert len(set(answers)) == 1  # every caller hears the one final answer
    captured, _ = await ledger.ledger_totals()
    assert captured == (1250 if answers[0] == CAPTURED else 0)


@pytest.mark.anyio
async def test_a_void_between_authorisation_and_capture_leaves_nothing_to_capture(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    assert await authorise(processor, "order-1", "tok_visa") == AUTHORISED

    assert await processor.void("order-1") == VOIDED

    assert await processor.capture("order-1") == VOIDED
    assert await authorise(processor, "order-1", "tok_visa") == VOIDED
    assert await ledger.ledger_entry("order-1") == ("voided", False)
    assert await processor.refund("order-1") is False
    assert await ledger.ledger_totals() == (0, 0)


@pytest.mark.anyio
async def test_a_capture_wins_over_a_later_void_and_is_made_once(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    await authorise(processor, "order-1", "tok_visa")

    assert await processor.capture("order-1") == CAPTURED
    assert await processor.void("order-1") == CAPTURED
    assert await processor.capture("order-1") == CAPTURED
    assert await authorise(processor, "order-1", "tok_visa") == CAPTURED
    assert await ledger.ledger_totals() == (1250, 0)


@pytest.mark.anyio
async def test_asking_again_for_an_authorised_order_answers_its_one_authorisation(
    processor: CardProcessor, ledger: PaymentsStore
) -> None:
    # A retry, a redelivery or another replica: the processor decides an order once.
    answers = [await authorise(processor, "order-1", "tok_processing_error") for _ in range(5)]

    assert answers == [TRANSIENT, TRANSIENT, AUTHORISED, AUTHORISED, AUTHORISED]
    assert await ledger.ledger_entry("order-1") == ("authorised", False)
    assert await ledger.ledger_totals() == (0, 0)  # authorised is not captured


@pytest.mark.anyio
async def test_a_void_during_a_slow_authorisation_returns_at_once_and_the_authorisation_loses(
    ledger: PaymentsStore,
) -> None:
    processor = CardProcessor(ledger, slow_seconds=30)
    slow = asyncio.ensure_future(authorise(processor, "order-1", "tok_slow"))
    for _ in range(1000):  # bounded: until the request has reached the processor
        if await ledger.ledger_entry("order-1") is not None:
            break
        await asyncio.sleep(0)
    assert await ledger.ledger_entry("order-1") == (None, False)  # asked, not answered

    assert await asyncio.wait_for(processor.void("order-1"), 5) == VOIDED

    assert not slow.done()  # the void did not wait for the card network
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    assert await ledger.settle_charge("order-1", AUTHORISED) == VOIDED  # its late answer
    assert await ledger.ledger_totals() == (0, 0)


class CountingLedger:
    """A ledger that notes how many charges are inside the processor at once."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0

    async def count_attempt(
        self, order_id: str, amount: int, currency: str, token: str
    ) -> tuple[int, ChargeResult | None]:
        self.inside += 1
        self.most = max(self.most, self.inside)
        await asyncio.sleep(0.01)
        self.inside -= 1
        return 1, None

    async def settle_charge(self, order_id: str, result: ChargeResult) -> ChargeResult:
        return result

    async def capture_charge(self, order_id: str) -> ChargeResult:
        return CAPTURED

    async def void_charge(self, order_id: str) -> ChargeResult:
        return VOIDED

    async def refund_charge(self, order_id: str) -> bool:
        return False


@pytest.mark.anyio
async def test_one_process_has_at_most_its_concurrency_of_charges_in_flight() -> None:
    ledger = CountingLedger()
    processor = CardProcessor(ledger, slow_seconds=0.01, concurrency=3)

    answers = await asyncio.gather(
        *(charge(processor, f"order-{n}", "tok_slow") for n in range(12))
    )

    assert answers == [CAPTURED] * 12
    assert ledger.most == 3
