"""The notifications module spec: what it subscribes to, what it needs, how it is built."""

from __future__ import annotations

from litestar.di import Provide

from app.modules.notifications.api import NotificationsController
from app.modules.notifications.email import EmailChannel
from app.modules.notifications.service import NotificationService
from app.modules.notifications.store import NotificationsStore
from app.modules.notifications.views import (
    DeletedUser,
    IssuedRefund,
    ReceivedPayment,
    RegisteredContact,
    UpdatedContact,
)
from app.modules.payments.contracts import PaymentRefunded, PaymentSucceeded
from app.modules.spec import Assembly, Module, ModuleContext, UserData
from app.modules.users.contracts import UserDeleted, UserRegistered, UserUpdated


def assemble(context: ModuleContext) -> Assembly:
    store: NotificationsStore = context.store
    service = NotificationService(
        store, context.bus, personal_data=context.personal_data, email=EmailChannel()
    )
    return Assembly(
        route_handlers=[NotificationsController],
        dependencies={
            "notifications": Provide(lambda: service, use_cache=True, sync_to_thread=False)
        },
        purge=store.purge,
        handlers={
            RegisteredContact: service.on_user_registered,
            UpdatedContact: service.on_user_updated,
            DeletedUser: service.on_user_deleted,
            ReceivedPayment: service.on_payment_succeeded,
            IssuedRefund: service.on_payment_refunded,
        },
        outbox=None,
    )


module = Module(
    name="notifications",
    description="Tells users about their payments by email; keeps a replica of their contacts "
    "(SQL: SQLite or PostgreSQL).",
    publishes=(),
    subscribes=(UserRegistered, UserUpdated, UserDeleted, PaymentSucceeded, PaymentRefunded),
    reads=(RegisteredContact, UpdatedContact, DeletedUser, ReceivedPayment, IssuedRefund),
    open_store=NotificationsStore,
    assemble=assemble,
    # What it sent, and the contact details it keeps to send them (its replica of the user).
    user_data=(
        UserData("?user_id={user_id}"),
        UserData("/contacts?user_id={user_id}", part="contacts"),
    ),
)
