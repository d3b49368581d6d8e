"""A payment's life, as rules alone: every change each status allows, every one it refuses,
and the events each change causes. No store, no processor, no bus, no loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from app.kernel.errors import Conflict
from app.modules.orders.contracts import OrderPlaced
from app.modules.payments.contracts import PaymentFailed, PaymentRefunded, PaymentSucceeded
from app.modules.payments.payment import IllegalTransition, Payment, PaymentStatus

OPENED_AT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LATER = OPENED_AT + timedelta(seconds=3)

PROCESSING, SUCCEEDED = PaymentStatus.PROCESSING, PaymentStatus.SUCCEEDED
FAILED, REFUNDED = PaymentStatus.FAILED, PaymentStatus.REFUNDED

FACTS = {
    "payment_id": "pay-1",
    "order_id": "order-1",
    "user_id": "user-1",
    "amount": 2_500,
    "currency": "EUR",
}


def started() -> Payment:
    placed = OrderPlaced(
        order_id="order-1",
        user_id="user-1",
        total=2_500,
        currency="EUR",
        payment_token="tok_visa",
        item_count=1,
    )
    return Payment.start(payment_id="pay-1", placed=placed, now=OPENED_AT)


def in_status(status: PaymentStatus) -> Payment:
    return msgspec.structs.replace(started(), status=status, attempts=1, event_sequence=1)


def test_a_placed_order_starts_a_processing_payment_of_its_total_not_yet_attempted() -> None:
    payment = started()

    assert payment.status == PROCESSING
    assert not payment.is_settled
    assert (payment.order_id, payment.user_id) == ("order-1", "user-1")
    assert (payment.amount, payment.currency, payment.token) == (2_500, "EUR", "tok_visa")
    assert (payment.attempts, payment.failure_reason, payment.event_sequence) == (0, None, 0)
    assert (payment.created_at, payment.updated_at) == (OPENED_AT, OPENED_AT)


def test_each_attempt_is_counted_and_causes_no_event() -> None:
    payment = started().record_attempt(LATER).record_attempt(LATER)

    assert (payment.status, payment.attempts) == (PROCESSING, 2)
    assert payment.updated_at == LATER
    assert payment.event_sequence == 0


def test_a_captured_charge_succeeds_with_payment_succeeded() -> None:
    payment, events = started().record_attempt(LATER).succeed(LATER)

    assert (payment.status, payment.attempts, payment.failure_reason) == (SUCCEEDED, 1, None)
    assert payment.is_settled
    assert payment.event_sequence == 1
    assert events == [PaymentSucceeded(**FACTS)]


def test_a_declined_charge_fails_with_its_reason() -> None:
    payment, events = started().record_attempt(LATER).fail("card_declined", LATER)

    assert (payment.status, payment.failure_reason, payment.attempts) == (
        FAILED,
        "card_declined",
        1,
    )
    assert payment.event_sequence == 1
    assert events == [PaymentFailed(**FACTS, reason="card_declined")]


def test_a_failure_without_a_reason_is_announced_as_failed() -> None:
    payment, events = started().fail(None, LATER)

    assert (payment.status, payment.failure_reason) == (FAILED, None)
    assert events == [PaymentFailed(**FACTS, reason="failed")]


def test_a_cancelled_order_fails_its_payment_without_counting_an_attempt() -> None:
    payment, events = started().fail("order_cancelled", LATER)

    assert (payment.status, payment.attempts) == (FAILED, 0)
    assert events == [PaymentFailed(**FACTS, reason="order_cancelled")]


def test_a_succeeded_payment_is_refunded_with_payment_refunded() -> None:
    succeeded, _ = started().record_attempt(LATER).succeed(LATER)

    payment, events = succeeded.refund(LATER)

    assert (payment.status, payment.attempts, payment.failure_reason) == (REFUNDED, 1, None)
    assert payment.event_sequence == 2
    assert events == [PaymentRefunded(**FACTS)]


@pytest.mark.parametrize("status", [SUCCEEDED, FAILED, REFUNDED])
@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("record_attempt", "be charged"),
        ("succeed", "succeed"),
        ("fail", "fail"),
    ],
)
def test_a_settled_payment_is_never_charged_settled_or_failed_again(
    status: PaymentStatus, change: str, says: str
) -> None:
    payment = in_status(status)
    changes = {
        "record_attempt": lambda: payment.record_attempt(LATER),
        "succeed": lambda: payment.succeed(LATER),
        "fail": lambda: payment.fail("card_declined", LATER),
    }

    with pytest.raises(IllegalTransition) as refused:
        changes[change]()

    assert isinstance(refused.value, Conflict)
    assert refused.value.detail == (
        f"payment 'pay-1' is {status.value}: only a PROCESSING payment can {says}"
    )


@pytest.mark.parametrize("status", [PROCESSING, FAILED, REFUNDED])
def test_only_a_succeeded_payment_can_be_refunded(status: PaymentStatus) -> None:
    with pytest.raises(IllegalTransition) as refused:
        in_status(status).refund(LATER)

    assert refused.value.detail == (
        f"payment 'pay-1' is {status.value}: only a SUCCEEDED payment can be refunded"
    )
