"""The events the payments module publishes: its public face."""

from __future__ import annotations

from app.bus import Event


class PaymentSucceeded(Event, frozen=True, kw_only=True):
    wire_name = "PaymentSucceeded"
    version = 1

    payment_id: str
    order_id: str
    user_id: str
    amount: int
    currency: str


class PaymentFailed(Event, frozen=True, kw_only=True):
    wire_name = "PaymentFailed"
    version = 1

    payment_id: str
    order_id: str
    user_id: str
    amount: int
    currency: str
    reason: str


class PaymentRefunded(Event, frozen=True, kw_only=True):
    wire_name = "PaymentRefunded"
    version = 1

    payment_id: str
    order_id: str
    user_id: str
    amount: int
    currency: str
