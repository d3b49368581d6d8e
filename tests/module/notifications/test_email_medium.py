"""User text in a notification is escaped for its medium, a plain-text email: a name cannot
start a line of its own in the body, nor a header of its own ("\\r\\nBcc: ..."), and markup
in it is sent as the characters it is, in a text/plain message with no HTML part."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import Message

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.kernel.ids import new_id
from app.modules.notifications.email import EmailChannel
from app.modules.notifications.module import module as notifications_module
from app.modules.notifications.notification import Notification, NotificationKind, one_line
from app.modules.payments.contracts import PaymentSucceeded
from app.modules.users.contracts import UserRegistered
from tests.support.scenario import Scenario, scenario

HEADERS = ["From", "To", "Subject", "Content-Type", "Content-Transfer-Encoding", "MIME-Version"]
INJECTING_NAME = "Eve\r\nBcc: victim@example.com\r\n\r\n<script>alert(1)</script>\u2028Call us"


@pytest.fixture
async def notifications(anyio_backend: str) -> AsyncIterator[Scenario]:
    async with scenario(notifications_module) as alone:
        yield alone


async def paid_notification(notifications: Scenario, name: str) -> dict[str, object]:
    """The notification recorded for a user with this name whose payment succeeded."""
    user_id, order_id, payment_id = new_id(), new_id(), new_id()
    registered = UserRegistered(
        user_id=user_id, name=name, email="eve@example.com", registered_at="2025-01-01T00:00:00Z"
    )
    await notifications.deliver(registered, producer="users", aggregate_id=user_id, sequence=1)
    paid = PaymentSucceeded(
        payment_id=payment_id, order_id=order_id, user_id=user_id, amount=1250, currency="EUR"
    )
    await notifications.deliver(paid, producer="payments", aggregate_id=payment_id)
    await notifications.settle()
    response = await notifications.client.get("/api/notifications", params={"user_id": user_id})
    assert response.status_code == 200, response.text
    [notification] = response.json()["items"]
    result: dict[str, object] = notification
    return result


def row(*, to: str = "ada@example.com", subject: str = "Paid", body: str = "Hi") -> Notification:
    return Notification(
        id=new_id(),
        user_id="u1",
        order_id="o1",
        kind=NotificationKind.PAYMENT_SUCCEEDED,
        channel="email",
        to=to,
        subject=subject,
        body=body,
        created_at=datetime.now(UTC),
    )


def sent(notification: Notification) -> Message:
    """The email as a mail server would read it back from the wire, headers as raw text."""
    return message_from_bytes(EmailChannel().render(notification).as_bytes())


@pytest.mark.anyio
async def test_a_name_with_line_breaks_stays_on_the_greeting_line(
    notifications: Scenario,
) -> None:
    notification = await paid_notification(notifications, INJECTING_NAME)

    body = str(notification["body"])
    assert body.splitlines() == [body]
    assert "\u2028" not in body
    assert body.startswith("Hello Eve  Bcc: victim@example.com    <script>alert(1)</script> Call")


@pytest.mark.anyio
async def test_a_name_with_markup_is_sent_as_plain_text_with_no_html_part(
    notifications: Scenario,
) -> None:
    notification = await paid_notification(notifications, INJECTING_NAME)

    email = sent(row(to=str(notification["to"]), body=str(notification["body"])))

    assert not email.is_multipart()
    assert email.get_content_type() == "text/plain"
    assert email.get_content_charset() == "utf-8"
    assert "<script>alert(1)</script>" in email.get_payload(decode=True).decode()


def test_a_line_break_in_a_header_value_cannot_add_a_header() -> None:
    email = sent(
        row(to="ada@example.com\r\nBcc: eve@example.com", subject="Paid\nBcc: eve@example.com")
    )

    assert list(email.keys()) == HEADERS
    assert email.get_all("Bcc") is None
    assert email["To"] == "ada@example.com  Bcc: eve@example.com"


@given(to=st.text(), subject=st.text(), name=st.text())
def test_no_text_in_any_field_adds_a_header_or_a_line_to_the_email(
    to: str, subject: str, name: str
) -> None:
    body = f"Hello {one_line(name)}, we received your payment."

    email = sent(row(to=to, subject=subject, body=body))

    assert list(email.keys()) == HEADERS
    assert email.get_payload(decode=True).decode().splitlines() == [body]
