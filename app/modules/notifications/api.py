"""HTTP for the notifications module: schemas and the controller."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter

from app.kernel.identity import Caller
from app.kernel.pages import DEFAULT_LIMIT, Cursor, Limit, Page, page_of
from app.kernel.problems import AUTHENTICATED, problems
from app.modules.notifications.notification import Contact, Notification, NotificationKind
from app.modules.notifications.service import NotificationService

NotificationId = Annotated[str, PathParameter(max_length=64, description="A notification id.")]
UserFilter = Annotated[str | None, QueryParameter(max_length=64, description="Only this user's.")]
OrderFilter = Annotated[str | None, QueryParameter(max_length=64, description="Only this order's.")]


class NotificationOut(msgspec.Struct):
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
    def of(cls, notification: Notification) -> NotificationOut:
        return msgspec.convert(notification, cls, from_attributes=True)


class ContactOut(msgspec.Struct):
    """The details kept to write to a user (from their UserRegistered and UserUpdated);
    "[erased]" once the user is deleted."""

    user_id: str
    name: str
    email: str

    @classmethod
    def of(cls, contact: Contact) -> ContactOut:
        return cls(contact.user_id, contact.name, contact.email)

    @property
    def id(self) -> str:  # a page's cursor: contacts are kept one per user
        return self.user_id


Notifications = NamedDependency[NotificationService]
# The caller, authenticated by the gateway, is request.user (one dependency fewer per request).
Me = Request[Caller, Any, Any]


class NotificationsController(Controller):
    path = "/"

    @get(
        "/",
        operation_id="listNotifications",
        responses=problems(*AUTHENTICATED),
        summary="List notifications, a page at a time",
    )
    async def list_notifications(
        self,
        notifications: Notifications,
        request: Me,
        user_id: UserFilter = None,
        order_id: OrderFilter = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> Page[NotificationOut]:
        rows = await notifications.page(
            request.user, user_id=user_id, order_id=order_id, after=cursor, limit=limit + 1
        )
        return page_of([NotificationOut.of(row) for row in rows], limit)

    @get(
        "/contacts",
        operation_id="listContacts",
        responses=problems(*AUTHENTICATED),
        summary="List the contact details kept to notify users, a page at a time",
    )
    async def list_contacts(
        self,
        notifications: Notifications,
        request: Me,
        user_id: UserFilter = None,
        limit: Limit = DEFAULT_LIMIT,
        cursor: Cursor = None,
    ) -> Page[ContactOut]:
        rows = await notifications.contacts(
            request.user, user_id=user_id, after=cursor, limit=limit + 1
        )
        return page_of([ContactOut.of(row) for row in rows], limit)

    @get(
        "/{notification_id:str}",
        operation_id="getNotification",
        responses=problems(*AUTHENTICATED, 404),
        summary="Read a notification",
    )
    async def get_notification(
        self, notification_id: NotificationId, notifications: Notifications, request: Me
    ) -> NotificationOut:
        return NotificationOut.of(await notifications.get(notification_id, request.user))
