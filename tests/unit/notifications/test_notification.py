"""A notification's words, as rules alone: what each payment event tells its user, with
the amount written as a person reads it and their name kept on one line. No store, no loop."""

from __future__ import annotations

from datetime import UTC, datetime

from app.modules.notifications.notification import (
    Contact,
    Notification,
    NotificationKind,
    one_line,
)
from app.modules.payments.contracts import PaymentRefunded, PaymentSucceeded

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
ADA = Contact(user_id="user-1", name="Ada", email="ada@example.com")
FACTS = {
    "payment_id": "pay-1",
    "order_id": "order-1",
    "user_id": "user-1",
    "amount": 1_250,
    "currency": "EUR",
}


def test_a_payment_received_notice_tells_the_amount_and_the_order() -> None:
    notice = Notification.payment_received(
        PaymentSucceeded(**FACTS), ADA, notification_id="n-1", channel="email", now=NOW
    )

    assert notice == Notification(
        id="n-1",
        user_id="user-1",
        order_id="order-1",
        kind=NotificationKind.PAYMENT_SUCCEEDED,
        channel="email",
        to="ada@example.com",
        subject="Payment received for order order-1",
        body="Hello Ada, we received your payment of 12.50 EUR for order order-1. Thank you.",
        created_at=NOW,
    )


def test_a_refund_notice_tells_the_amount_in_the_currencys_own_minor_units() -> None:
    event = PaymentRefunded(**{**FACTS, "amount": 1_250, "currency": "JPY"})

    notice = Notification.refund_issued(event, ADA, notification_id="n-2", channel="email", now=NOW)

    assert notice.kind == NotificationKind.PAYMENT_REFUNDED
    assert notice.subject == "Refund issued for order order-1"
    assert notice.body == (
        "Hello Ada, we refunded 1250 JPY for order order-1. "
        "It can take a few days to reach your account."
    )


def test_a_name_that_would_break_a_line_or_reorder_the_text_is_kept_on_one_line() -> None:
    sneaky = Contact(user_id="user-1", name="Ada\r\nBcc: eve@example.com\u202e", email="a@b.c")

    notice = Notification.payment_received(
        PaymentSucceeded(**FACTS), sneaky, notification_id="n-3", channel="email", now=NOW
    )

    assert notice.body.startswith("Hello Ada  Bcc: eve@example.com , we received")
    assert one_line("a\u2028b\u2066c") == "a b c"
