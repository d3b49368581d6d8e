"""An order and the rules of its life: which changes each status allows, and which events
each change causes. Pure: no store, no bus, no clock (the caller says what time it is).

Cancelling follows docs/decisions/0008-cancel.md: a PENDING order is CANCELLED at once; a
PAID one stays PAID with its cancel requested until its refund arrives; asking again is a
no-op; a CANCELLED or REFUNDED order cannot be cancelled.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

import msgspec

from app.kernel.errors import IllegalTransition
from app.modules.orders.contracts import OrderCancelled, OrderPlaced

OrderEvent = OrderPlaced | OrderCancelled


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    PAID = "PAID"
    CANCELLED = "CANCELLED"
    REFUNDED = "REFUNDED"


class Item(msgspec.Struct, frozen=True):
    sku: str
    quantity: int
    unit_price: int  # minor units (cents)


class Order(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    status: OrderStatus
    total: int  # minor units, computed from the items, never taken from a client
    currency: str
    items: tuple[Item, ...]
    payment_token: str
    cancel_requested: bool
    event_sequence: int  # the sequence number of the last event it caused
    created_at: datetime
    updated_at: datetime

    @classmethod
    def place(
        cls,
        *,
        order_id: str,
        user_id: str,
        currency: str,
        payment_token: str,
        items: Sequence[Item],
        now: datetime,
    ) -> tuple[Order, list[OrderEvent]]:
        order = cls(
            id=order_id,
            user_id=user_id,
            status=OrderStatus.PENDING,
            total=sum(item.quantity * item.unit_price for item in items),
            currency=currency,
            items=tuple(items),
            payment_token=payment_token,
            cancel_requested=False,
            event_sequence=1,
            created_at=now,
            updated_at=now,
        )
        placed = OrderPlaced(
            order_id=order.id,
            user_id=order.user_id,
            total=order.total,
            currency=order.currency,
            payment_token=order.payment_token,
            item_count=sum(item.quantity for item in items),
        )
        return order, [placed]

    @property
    def is_final(self) -> bool:
        """Nothing will change it any more: it ended CANCELLED or REFUNDED."""
        return self.status in (OrderStatus.CANCELLED, OrderStatus.REFUNDED)

    def cancel(self, now: datetime) -> tuple[Order, list[OrderEvent]]:
        """The customer cancels: raises IllegalTransition for a CANCELLED or REFUNDED order."""
        if self.status == OrderStatus.PAID and self.cancel_requested:
            return self, []  # asked before: its refund is on the way
        if self.is_final:
            raise IllegalTransition(
                f"order {self.id!r} is {self.status}: only PENDING or PAID orders can be cancelled"
            )
        cancelled = OrderCancelled(
            order_id=self.id, user_id=self.user_id, status_when_cancelled=self.status.value
        )
        status = OrderStatus.CANCELLED if self.status == OrderStatus.PENDING else self.status
        changed = msgspec.structs.replace(
            self,
            status=status,
            cancel_requested=True,
            event_sequence=self.event_sequence + 1,
            updated_at=now,
        )
        return changed, [cancelled]

    # Following its payment. Payment events may arrive after a cancel, or twice over a
    # broker: one that finds the order in another status leaves it as it is.

    def pay(self, now: datetime) -> tuple[Order, list[OrderEvent]]:
        """The payment succeeded: a PENDING order is PAID."""
        return self._follow(OrderStatus.PENDING, OrderStatus.PAID, now), []

    def fail_payment(self, now: datetime) -> tuple[Order, list[OrderEvent]]:
        """The payment failed: a PENDING order is CANCELLED, with nothing to compensate."""
        return self._follow(OrderStatus.PENDING, OrderStatus.CANCELLED, now), []

    def refund(self, now: datetime) -> tuple[Order, list[OrderEvent]]:
        """The payment was refunded (its cancel was accepted): a PAID order is REFUNDED."""
        return self._follow(OrderStatus.PAID, OrderStatus.REFUNDED, now), []

    def _follow(self, source: OrderStatus, target: OrderStatus, now: datetime) -> Order:
        if self.status != source:
            return self
        return msgspec.structs.replace(self, status=target, updated_at=now)
