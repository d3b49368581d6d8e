"""What notifications reads of the events it consumes: its own view of each, only the fields
it needs, and the versions it accepts (docs/decisions/0027-tolerant-readers.md). A field a
producer adds is ignored here; one it removes, renames or retypes that a view reads fails
tests/architecture/test_contract_readers.py, naming this module."""

from __future__ import annotations

from app.bus import View
from app.modules.payments.contracts import PaymentRefunded, PaymentSucceeded
from app.modules.users.contracts import UserDeleted, UserRegistered, UserUpdated


class RegisteredContact(View, frozen=True, kw_only=True):
    """A new user's contact details, for the replica: sealed with the user's key since v2
    (`personal`, opened with users' personal_details; docs/decisions/0030-crypto-shredding.md),
    in plain only in a v1 event."""

    event = UserRegistered
    accepts = (1, 2)

    user_id: str
    personal: str | None = None
    name: str | None = None
    email: str | None = None


class UpdatedContact(View, frozen=True, kw_only=True):
    """A user's changed contact details (sealed since v2, as RegisteredContact)."""

    event = UserUpdated
    accepts = (1, 2)

    user_id: str
    personal: str | None = None
    name: str | None = None
    email: str | None = None


class DeletedUser(View, frozen=True, kw_only=True):
    """A user deleted everywhere: erase what is kept of them."""

    event = UserDeleted
    accepts = (1,)

    user_id: str


class ReceivedPayment(View, frozen=True, kw_only=True):
    """A payment to tell its user about."""

    event = PaymentSucceeded
    accepts = (1,)

    order_id: str
    user_id: str
    amount: int
    currency: str


class IssuedRefund(View, frozen=True, kw_only=True):
    """A refund to tell its user about."""

    event = PaymentRefunded
    accepts = (1,)

    order_id: str
    user_id: str
    amount: int
    currency: str
