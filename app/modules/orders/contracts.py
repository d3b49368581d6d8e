"""The events the orders module publishes: its public face."""

from __future__ import annotations

from app.bus import Event


class OrderPlaced(Event, frozen=True, kw_only=True):
    order_id: str
    user_id: str
    total: int
    currency: str
    payment_token: str


class OrderCancelled(Event, frozen=True, kw_only=True):
    order_id: str
    user_id: str
    status_when_cancelled: str
