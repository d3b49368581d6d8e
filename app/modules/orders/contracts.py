"""The events the orders module publishes: its public face.

Evolving one: add a version, keep the old payloads readable with an upcaster here, next to
the contract, and upgrade its consumers before its producer (docs/decisions/0026-event-versions.md).
"""

from __future__ import annotations

from typing import Any

from app.bus import Event
from app.bus.contracts import upcaster


class OrderPlaced(Event, frozen=True, kw_only=True):
    """v2 added item_count (how many items the order holds), so that a journey can say what
    was ordered without asking the orders module; None when it was published as v1."""

    wire_name = "OrderPlaced"
    version = 2

    order_id: str
    user_id: str
    total: int
    currency: str
    payment_token: str
    item_count: int | None


@upcaster(OrderPlaced, from_version=1)
def _placed_v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    """A v1 order did not say how many items it held, and nothing in it tells: unknown."""
    return {**payload, "item_count": None}


class OrderCancelled(Event, frozen=True, kw_only=True):
    wire_name = "OrderCancelled"
    version = 1

    order_id: str
    user_id: str
    status_when_cancelled: str
