"""The orders module spec: what it publishes and consumes, how it is built."""

from __future__ import annotations

import msgspec
from litestar.di import Provide

from app.kernel.idempotency import Idempotency
from app.modules.orders.api import OrdersController
from app.modules.orders.contracts import OrderCancelled, OrderPlaced
from app.modules.orders.service import OrderService
from app.modules.orders.store import OrderDocuments, OrderStore, open_order_documents
from app.modules.orders.views import KnownUser, PaidOrder, RefundedOrder, UnpaidOrder
from app.modules.payments.contracts import PaymentFailed, PaymentRefunded, PaymentSucceeded
from app.modules.spec import Assembly, Module, ModuleContext, Seconds, UserData
from app.modules.users.contracts import UserRegistered


class OrdersSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Its settings section: how long an order waits for its user's replica to arrive."""

    replica_wait_seconds: Seconds = 2.0


def assemble(context: ModuleContext) -> Assembly:
    documents: OrderDocuments = context.store
    settings: OrdersSettings = context.section
    store = OrderStore(documents)
    service = OrderService(
        store,
        context.bus,
        replica_wait=settings.replica_wait_seconds,
        idempotency=Idempotency(context.settings.idempotency_ttl_seconds, context.fingerprint_key),
    )
    return Assembly(
        route_handlers=[OrdersController],
        dependencies={"orders": Provide(lambda: service, use_cache=True, sync_to_thread=False)},
        handlers={
            KnownUser: service.on_user_registered,
            PaidOrder: service.on_payment_succeeded,
            UnpaidOrder: service.on_payment_failed,
            RefundedOrder: service.on_payment_refunded,
        },
        outbox=store.outbox,
        purge=store.purge,
    )


module = Module(
    name="orders",
    description="Places and tracks orders (documents: SQLite JSON, mongomock or MongoDB).",
    publishes=(OrderPlaced, OrderCancelled),
    subscribes=(UserRegistered, PaymentSucceeded, PaymentFailed, PaymentRefunded),
    reads=(KnownUser, PaidOrder, UnpaidOrder, RefundedOrder),
    open_store=open_order_documents,
    assemble=assemble,
    user_data=(UserData("?user_id={user_id}"),),
    settings=OrdersSettings,
)
