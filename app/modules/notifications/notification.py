"""What the notifications module keeps: users' contact details (a replica of what the users
module announced) and the notifications it sent, one per order and kind. Pure: the words of
each notification are composed here, from a contact and the event that caused it.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from enum import StrEnum

import msgspec

from app.modules.notifications.money import format_amount
from app.modules.notifications.views import IssuedRefund, ReceivedPayment

# Bidirectional embeddings, overrides and isolates: they reorder what a reader sees.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKING = {"Cc", "Zl", "Zp"}  # controls (CR, LF, NEL...), line and paragraph separators


def one_line(text: str) -> str:
    """User text made safe to put in one line of a plain-text email or a header value."""
    text = _BIDI_CONTROLS.sub(" ", text)
    return "".join(" " if unicodedata.category(c) in _LINE_BREAKING else c for c in text)


class NotificationKind(StrEnum):
    """What a notification tells; an order is told each at most once."""

    PAYMENT_SUCCEEDED = "payment_succeeded"
    PAYMENT_REFUNDED = "payment_refunded"


ERASED = "[erased]"  # what stands for personal data once its user is deleted


class Contact(msgspec.Struct, frozen=True):
    user_id: str
    name: str
    email: str

    @classmethod
    def erased(cls, user_id: str) -> Contact:
        """What is kept of a deleted user: nothing personal, and no one to tell (a later
        payment event about them notifies no one, and an older event cannot bring the
        details back: its sequence is lower)."""
        return cls(user_id, ERASED, ERASED)

    @property
    def is_erased(self) -> bool:
        return self.email == ERASED


class Notification(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    order_id: str
    kind: NotificationKind
    channel: str
    to: str
    subject: str
    body: str
    created_at: datetime

    @classmethod
    def payment_received(
        cls,
        event: ReceivedPayment,
        contact: Contact,
        *,
        notification_id: str,
        channel: str,
        now: datetime,
    ) -> Notification:
        amount = format_amount(event.amount, event.currency)
        return cls._about_payment(
            event,
            contact,
            NotificationKind.PAYMENT_SUCCEEDED,
            subject=f"Payment received for order {event.order_id}",
            body=(
                f"Hello {one_line(contact.name)}, we received your payment of {amount} "
                f"for order {event.order_id}. Thank you."
            ),
            notification_id=notification_id,
            channel=channel,
            now=now,
        )

    @classmethod
    def refund_issued(
        cls,
        event: IssuedRefund,
        contact: Contact,
        *,
        notification_id: str,
        channel: str,
        now: datetime,
    ) -> Notification:
        amount = format_amount(event.amount, event.currency)
        return cls._about_payment(
            event,
            contact,
            NotificationKind.PAYMENT_REFUNDED,
            subject=f"Refund issued for order {event.order_id}",
            body=(
                f"Hello {one_line(contact.name)}, we refunded {amount} for order "
                f"{event.order_id}. It can take a few days to reach your account."
            ),
            notification_id=notification_id,
            channel=channel,
            now=now,
        )

    @classmethod
    def _about_payment(
        cls,
        event: ReceivedPayment | IssuedRefund,
        contact: Contact,
        kind: NotificationKind,
        *,
        subject: str,
        body: str,
        notification_id: str,
        channel: str,
        now: datetime,
    ) -> Notification:
        """The notice a payment event's words make, to the contact, about its order."""
        return cls(
            id=notification_id,
            user_id=event.user_id,
            order_id=event.order_id,
            kind=kind,
            channel=channel,
            to=contact.email,
            subject=subject,
            body=body,
            created_at=now,
        )
