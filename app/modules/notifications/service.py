"""The notifications module's use cases: keep users' contact details, tell them about their
payments (the words are Notification's, notification.py). No HTTP here, no SQL.

Contacts are replicated from the users module's events; a payment event for a user whose
contact has not arrived yet is retried by the bus until it has.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial
from typing import Protocol

from app.bus import Envelope, ModuleBus, NotYet
from app.kernel.errors import NotFound
from app.kernel.identity import NOTHING, Caller
from app.kernel.ids import new_id, utcnow
from app.kernel.sealing import PersonalData
from app.modules.notifications.email import EmailChannel
from app.modules.notifications.notification import Contact, Notification
from app.modules.notifications.store import NotificationsStore
from app.modules.notifications.views import (
    DeletedUser,
    IssuedRefund,
    ReceivedPayment,
    RegisteredContact,
    UpdatedContact,
)
from app.modules.users.contracts import personal_details


class Compose(Protocol):
    """Makes an event's notification for a contact (Notification's constructors)."""

    def __call__(
        self, contact: Contact, *, notification_id: str, channel: str, now: datetime
    ) -> Notification: ...


class ContactUnknown(NotYet):
    """The user's contact details have not reached this replica yet: the bus waits for them
    without spending the event's attempts (app/bus/retry.py)."""


class NotificationService:
    def __init__(
        self,
        store: NotificationsStore,
        bus: ModuleBus,
        *,
        personal_data: PersonalData,
        email: EmailChannel | None = None,
    ) -> None:
        self._store = store
        self._bus = bus  # publishes nothing yet: its units of work hand off no events
        self._personal_data = personal_data
        self._email = email or EmailChannel()

    async def on_user_registered(self, event: RegisteredContact, envelope: Envelope) -> None:
        await self._keep_details(event, envelope)

    async def on_user_updated(self, event: UpdatedContact, envelope: Envelope) -> None:
        await self._keep_details(event, envelope)

    async def on_user_deleted(self, event: DeletedUser, envelope: Envelope) -> None:
        async with self._store.unit_of_work(self._bus, cause=envelope) as work:
            if not work.handled_before:
                await self._store.erase_user(work, event.user_id, sequence=envelope.sequence)

    async def _keep_details(
        self, event: RegisteredContact | UpdatedContact, envelope: Envelope
    ) -> None:
        """The contact, opened from the event's sealed details (docs/decisions/0030); a user
        already deleted leaves nothing to open, and is kept as erased."""
        details = await personal_details(event, self._personal_data)
        contact = (
            Contact.erased(event.user_id)
            if details is None
            else Contact(event.user_id, details.name, details.email)
        )
        await self._keep_contact(contact, envelope)

    async def on_payment_succeeded(self, event: ReceivedPayment, envelope: Envelope) -> None:
        await self._notify(envelope, event.user_id, partial(Notification.payment_received, event))

    async def on_payment_refunded(self, event: IssuedRefund, envelope: Envelope) -> None:
        await self._notify(envelope, event.user_id, partial(Notification.refund_issued, event))

    async def get(self, notification_id: str, caller: Caller) -> Notification:
        """Another user's notification is a 404, like one that does not exist."""
        notification = await self._store.get(notification_id)
        if notification is None or not caller.may_see(notification.user_id):
            raise NotFound(f"no notification {notification_id!r}")
        return notification

    async def page(
        self,
        caller: Caller,
        *,
        user_id: str | None,
        order_id: str | None,
        after: str | None,
        limit: int,
    ) -> list[Notification]:
        """A user lists only their own notifications; an admin, anyone's."""
        owner = caller.owner_filter(user_id)
        if owner is NOTHING:
            return []
        return await self._store.page(user_id=owner, order_id=order_id, after=after, limit=limit)

    async def contacts(
        self, caller: Caller, *, user_id: str | None, after: str | None, limit: int
    ) -> list[Contact]:
        """The contact details this module keeps: a user sees only their own; an admin,
        anyone's (what a user's export shows, docs/decisions/0031-export-by-composition.md)."""
        owner = caller.owner_filter(user_id)
        if owner is NOTHING:
            return []
        return await self._store.contacts_page(user_id=owner, after=after, limit=limit)

    async def _keep_contact(self, contact: Contact, envelope: Envelope) -> None:
        # The envelope's sequence orders events about one user: a late, older one loses.
        async with self._store.unit_of_work(self._bus, cause=envelope) as work:
            if not work.handled_before:
                await self._store.keep_contact(work, contact, sequence=envelope.sequence)

    async def _notify(self, envelope: Envelope, user_id: str, compose: Compose) -> None:
        async with self._store.unit_of_work(self._bus, cause=envelope) as work:
            if work.handled_before:
                return
            contact = await self._store.contact(work, user_id)
            if contact is None:
                raise ContactUnknown(f"no contact for user {user_id!r} yet")
            if contact.is_erased:
                return  # the user was deleted: there is no one to tell
            notification = compose(
                contact, notification_id=new_id(), channel=self._email.name, now=utcnow()
            )
            # False: this order was already told about this (another event, same fact).
            recorded = await self._store.add_notification(work, notification)
        if recorded and work.committed:  # nothing is "sent" that the record does not hold
            self._email.send(notification)
