"""Step 1, the other half. What shipping reads of the events it consumes: its own view of
each, only the fields it needs, unknown fields ignored, and the versions it accepts
(docs/decisions/0027-tolerant-readers.md)."""

from __future__ import annotations

from app.bus import View
from app.modules.payments.contracts import PaymentSucceeded


class PaidOrder(View, frozen=True, kw_only=True):
    """A paid order to ship, and to whom."""

    event = PaymentSucceeded
    accepts = (1,)

    order_id: str
    user_id: str
