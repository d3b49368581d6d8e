"""An order's life, as rules alone: every change each status allows, every one it refuses,
and the events each change causes (docs/decisions/0008-cancel.md). No store, no bus, no loop."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from app.kernel.errors import Conflict
from app.modules.orders.contracts import OrderCancelled, OrderPlaced
from app.modules.orders.order import IllegalTransition, Item, Order, OrderEvent, OrderStatus

FollowPayment = Callable[[Order, datetime], tuple[Order, list[OrderEvent]]]

PLACED_AT = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
LATER = PLACED_AT + timedelta(minutes=5)

PENDING, PAID = OrderStatus.PENDING, OrderStatus.PAID
CANCELLED, REFUNDED = OrderStatus.CANCELLED, OrderStatus.REFUNDED


def placed() -> Order:
    order, _ = Order.place(
        order_id="order-1",
        user_id="user-1",
        currency="EUR",
        payment_token="tok_visa",
        items=[Item("book", 2, 1250), Item("pen", 3, 199)],
        now=PLACED_AT,
    )
    return order


def in_status(status: OrderStatus, *, cancel_requested: bool = False) -> Order:
    return msgspec.structs.replace(placed(), status=status, cancel_requested=cancel_requested)


# Placing.


def test_placing_makes_a_pending_order_whose_total_is_computed_from_its_items() -> None:
    order, events = Order.place(
        order_id="order-1",
        user_id="user-1",
        currency="EUR",
        payment_token="tok_visa",
        items=[Item("book", 2, 1250), Item("pen", 3, 199)],
        now=PLACED_AT,
    )

    assert order.status == PENDING
    assert order.total == 2 * 1250 + 3 * 199
    assert order.items == (Item("book", 2, 1250), Item("pen", 3, 199))
    assert not order.cancel_requested
    assert (order.created_at, order.updated_at) == (PLACED_AT, PLACED_AT)
    assert order.event_sequence == 1
    assert events == [
        OrderPlaced(
            order_id="order-1",
            user_id="user-1",
            total=order.total,
            currency="EUR",
            payment_token="tok_visa",
            item_count=2 + 3,
        )
    ]


# Cancelling.


def test_cancelling_a_pending_order_cancels_it_at_once() -> None:
    order, events = placed().cancel(LATER)

    assert (order.status, order.cancel_requested) == (CANCELLED, True)
    assert order.is_final
    assert order.updated_at == LATER
    assert order.event_sequence == 2
    assert events == [
        OrderCancelled(order_id="order-1", user_id="user-1", status_when_cancelled="PENDING")
    ]


def test_cancelling_a_paid_order_keeps_it_paid_with_its_cancel_requested() -> None:
    order, events = in_status(PAID).cancel(LATER)

    assert (order.status, order.cancel_requested) == (PAID, True)
    assert not order.is_final
    assert order.event_sequence == 2
    assert events == [
        OrderCancelled(order_id="order-1", user_id="user-1", status_when_cancelled="PAID")
    ]


def test_cancelling_a_paid_order_again_changes_nothing_and_causes_nothing() -> None:
    asked = in_status(PAID, cancel_requested=True)

    order, events = asked.cancel(LATER)

    assert order == asked
    assert events == []


@pytest.mark.parametrize("status", [CANCELLED, REFUNDED])
def test_a_cancelled_or_refunded_order_cannot_be_cancelled_a_409_naming_its_status(
    status: OrderStatus,
) -> None:
    with pytest.raises(IllegalTransition) as refused:
        in_status(status, cancel_requested=True).cancel(LATER)

    assert isinstance(refused.value, Conflict)
    assert refused.value.status == 409
    assert refused.value.detail == (
        f"order 'order-1' is {status.value}: only PENDING or PAID orders can be cancelled"
    )


# Following the payment.


def test_a_succeeded_payment_makes_a_pending_order_paid() -> None:
    order, events = placed().pay(LATER)

    assert order.status == PAID
    assert order.updated_at == LATER
    assert order.event_sequence == 1
    assert events == []


def test_a_failed_payment_cancels_a_pending_order_with_nothing_to_compensate() -> None:
    order, events = placed().fail_payment(LATER)

    assert order.status == CANCELLED
    assert not order.cancel_requested
    assert events == []


def test_a_refund_makes_a_paid_order_refunded() -> None:
    order, events = in_status(PAID, cancel_requested=True).refund(LATER)

    assert order.status == REFUNDED
    assert order.is_final
    assert events == []


@pytest.mark.parametrize(
    ("status", "follow"),
    [
        *((status, Order.pay) for status in (PAID, CANCELLED, REFUNDED)),
        *((status, Order.fail_payment) for status in (PAID, CANCELLED, REFUNDED)),
        *((status, Order.refund) for status in (PENDING, CANCELLED, REFUNDED)),
    ],
    ids=lambda value: getattr(value, "__name__", str(value)),
)
def test_a_payment_event_that_does_not_apply_to_the_status_leaves_the_order_as_it_is(
    status: OrderStatus, follow: FollowPayment
) -> None:
    """Payment events may arrive after a cancel, or twice over a broker."""
    before = in_status(status)

    order, events = follow(before, LATER)

    assert order == before
    assert events == []


# Any sequence of what can happen to an order.


class OrderLife(RuleBasedStateMachine):
    """Whatever happens, in whatever order: the status only moves forward, CANCELLED and
    REFUNDED are for good, an order is cancelled at most once, and each event it causes
    takes the next sequence number."""

    def __init__(self) -> None:
        super().__init__()
        self.order, events = Order.place(
            order_id="order-1",
            user_id="user-1",
            currency="EUR",
            payment_token="tok_visa",
            items=[Item("book", 1, 100)],
            now=PLACED_AT,
        )
        self.caused: list[OrderEvent] = list(events)
        self.statuses: list[OrderStatus] = []

    def apply(self, order: Order, events: list[OrderEvent]) -> None:
        assert order.event_sequence == self.order.event_sequence + len(events)
        if self.order.is_final:
            assert order.status == self.order.status
        self.order = order
        self.caused.extend(events)

    @rule(moment=st.integers(min_value=0, max_value=10_000))
    def cancel(self, moment: int) -> None:
        try:
            order, events = self.order.cancel(PLACED_AT + timedelta(seconds=moment))
        except IllegalTransition:
            assert self.order.is_final
            return
        self.apply(order, events)

    @rule()
    def pay(self) -> None:
        order, events = self.order.pay(LATER)
        self.apply(order, events)

    @rule()
    def fail_payment(self) -> None:
        order, events = self.order.fail_payment(LATER)
        self.apply(order, events)

    @rule()
    def refund(self) -> None:
        order, events = self.order.refund(LATER)
        self.apply(order, events)

    @invariant()
    def cancelled_at_most_once_and_only_when_asked(self) -> None:
        cancels = [event for event in self.caused if isinstance(event, OrderCancelled)]
        assert len(cancels) <= 1
        assert self.order.cancel_requested == bool(cancels)
        assert self.order.event_sequence == len(self.caused)

    @invariant()
    def refunded_only_once_paid_and_cancelled_only_unpaid(self) -> None:
        self.statuses.append(self.order.status)
        if self.order.status == REFUNDED:
            assert PAID in self.statuses
        if self.order.status == CANCELLED:
            assert PAID not in self.statuses


TestOrderLife = OrderLife.TestCase
