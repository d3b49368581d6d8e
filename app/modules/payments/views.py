"""What payments reads of the events it consumes: its own view of each, only the fields it
needs, and the versions it accepts (docs/decisions/0027-tolerant-readers.md). A field the
orders module adds is ignored here; one it removes, renames or retypes that a view reads
fails tests/architecture/test_contract_readers.py, naming this module."""

from __future__ import annotations

from app.bus import View
from app.modules.orders.contracts import OrderCancelled, OrderPlaced


class PlacedOrder(View, frozen=True, kw_only=True):
    """An order to charge: how much, on which card, for whom. v1 and v2 read the same here
    (v2 only added item_count, which payments does not need)."""

    event = OrderPlaced
    accepts = (1, 2)

    order_id: str
    user_id: str
    total: int
    currency: str
    payment_token: str


class CancelledOrder(View, frozen=True, kw_only=True):
    """An order whose charge must be voided or refunded."""

    event = OrderCancelled
    accepts = (1,)

    order_id: str
