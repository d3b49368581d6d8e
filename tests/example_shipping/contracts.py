"""Step 1. The events shipping publishes: its public face."""

from __future__ import annotations

from app.bus import Event


class ShipmentScheduled(Event, frozen=True, kw_only=True):
    wire_name = "ShipmentScheduled"
    version = 1

    shipment_id: str
    order_id: str
    user_id: str
    carrier: str
