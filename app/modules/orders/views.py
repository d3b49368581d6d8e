"""What orders reads of the events it consumes: its own view of each, only the fields it
needs, and the versions it accepts (docs/decisions/0027-tolerant-readers.md). A field a
producer adds is ignored here; one it removes, renames or retypes that a view reads fails
tests/architecture/test_contract_readers.py, naming this module."""

from __future__ import annotations

from app.bus import View
from app.modules.payments.contracts import PaymentFailed, PaymentRefunded, PaymentSucceeded
from app.modules.users.contracts import UserRegistered


class KnownUser(View, frozen=True, kw_only=True):
    """A user an order may be placed for: the replica keeps the id, nothing personal (so
    v2's sealing of the name and email changed nothing here)."""

    event = UserRegistered
    accepts = (1, 2)

    user_id: str


class PaidOrder(View, frozen=True, kw_only=True):
    event = PaymentSucceeded
    accepts = (1,)

    order_id: str


class UnpaidOrder(View, frozen=True, kw_only=True):
    event = PaymentFailed
    accepts = (1,)

    order_id: str


class RefundedOrder(View, frozen=True, kw_only=True):
    event = PaymentRefunded
    accepts = (1,)

    order_id: str
