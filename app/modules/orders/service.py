"""The orders module's use cases: place, read and cancel orders; follow payments. The rules
are Order's (order.py); this file checks who asks, loads and saves, and publishes what the
order's changes caused. No HTTP, no driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from app.bus import Envelope, ModuleBus
from app.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound, TryAgain
from app.kernel.idempotency import Idempotency, IdempotentWrite, StoredResponse
from app.kernel.identity import NOTHING, Caller
from app.kernel.ids import new_id, utcnow
from app.modules.orders.currencies import CIRCULATING_CODES
from app.modules.orders.order import Item, Order, OrderEvent, OrderStatus
from app.modules.orders.store import OrderStore, StoredOrder
from app.modules.orders.views import KnownUser, PaidOrder, RefundedOrder, UnpaidOrder

MAX_WRITE_RACES = 20

# An order's answer to one of its payment's events: Order.pay, Order.fail_payment, Order.refund.
FollowPayment = Callable[[Order, datetime], tuple[Order, list[OrderEvent]]]


class OrderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """What a customer asks for: `place` checks it and makes it an Order."""

    user_id: str | None  # the caller's own id, or None
    currency: str
    payment_token: str
    items: tuple[Item, ...]


class OrderService:
    def __init__(
        self,
        store: OrderStore,
        bus: ModuleBus,
        *,
        replica_wait: float,
        idempotency: Idempotency,
    ) -> None:
        self._store = store
        self._bus = bus
        self._replica_wait = replica_wait
        self._idempotency = idempotency
        self._arrivals: dict[str, tuple[asyncio.Event, int]] = {}  # user -> (signal, waiters)

    # Requests.

    def idempotent_write(
        self, *, scope: str, key: str, fingerprint: str, status: int, render: Any
    ) -> IdempotentWrite:
        return self._idempotency.write(scope, key, fingerprint, status, render)

    async def place_once(
        self,
        write: IdempotentWrite,
        caller: Caller,
        request: OrderRequest,
    ) -> tuple[StoredResponse, bool]:
        """Place an order at most once per idempotency key: (the response, replayed?)."""

        async def execute() -> bytes:
            return write.render(await self.place(caller, request, remember=write))

        return await self._idempotency.run(
            write, lambda: self._store.remembered(write.scope, write.key), execute
        )

    async def place(
        self, caller: Caller, request: OrderRequest, *, remember: IdempotentWrite | None = None
    ) -> Order:
        if request.user_id is not None and request.user_id != caller.id:
            raise Forbidden(
                "user_id must be your own id, or left out: orders are placed by their user"
            )
        if request.currency not in CIRCULATING_CODES:
            raise InvalidInput(
                "currency",
                f"{request.currency!r} is not the ISO 4217 code of a circulating currency",
            )
        if not await self._user_known(caller.id):
            raise TryAgain(
                f"user {caller.id!r} is not known to orders yet: a registration reaches orders "
                f"a moment after it is accepted; retry after the Retry-After delay",
            )
        order, events = Order.place(
            order_id=new_id(),
            user_id=caller.id,
            currency=request.currency,
            payment_token=request.payment_token,
            items=request.items,
            now=utcnow(),
        )
        async with self._store.unit_of_work(self._bus) as work:
            work.save(order)
            work.publish(order, events)
            if remember is not None:
                await work.remember(remember, order)
        return order

    async def get(self, order_id: str, caller: Caller) -> Order:
        """Another user's order is a 404, like one that does not exist."""
        return (await self._visible(order_id, caller)).order

    async def page(
        self,
        caller: Caller,
        *,
        user_id: str | None,
        status: OrderStatus | None,
        after: str | None,
        limit: int,
    ) -> list[Order]:
        """A user lists only their own orders; an admin, anyone's."""
        owner = caller.owner_filter(user_id)
        if owner is NOTHING:
            return []
        return await self._store.page(user_id=owner, status=status, after=after, limit=limit)

    async def cancel(self, order_id: str, caller: Caller) -> tuple[Order, bool]:
        """Cancel an order (docs/decisions/0008-cancel.md). Returns the order and whether it
        is final already: a PENDING order is CANCELLED at once; a PAID one waits for its
        refund."""
        for _ in range(MAX_WRITE_RACES):
            stored = await self._visible(order_id, caller)
            changed, events = stored.order.cancel(utcnow())
            if not events:  # cancelled before: nothing to write
                return changed, False
            async with self._store.unit_of_work(self._bus, stored=stored) as work:
                work.save(changed)
                work.publish(changed, events)
            if work.committed:
                return changed, changed.is_final
        raise Conflict(f"order {order_id!r} is changing concurrently; try again")

    # Events.

    async def on_user_registered(self, event: KnownUser, envelope: Envelope) -> None:
        await self._store.remember_user(event.user_id, envelope.sequence)
        waiting = self._arrivals.get(event.user_id)
        if waiting is not None:
            waiting[0].set()

    async def on_payment_succeeded(self, event: PaidOrder, envelope: Envelope) -> None:
        await self._follow(event.order_id, envelope, Order.pay)

    async def on_payment_failed(self, event: UnpaidOrder, envelope: Envelope) -> None:
        await self._follow(event.order_id, envelope, Order.fail_payment)

    async def on_payment_refunded(self, event: RefundedOrder, envelope: Envelope) -> None:
        # A PAID order whose cancel was accepted ends REFUNDED; a CANCELLED one stays so.
        await self._follow(event.order_id, envelope, Order.refund)

    # Inside.

    async def _visible(self, order_id: str, caller: Caller) -> StoredOrder:
        stored = await self._store.get(order_id)
        if stored is None or not caller.may_see(stored.order.user_id):
            raise NotFound(f"no order {order_id!r}")
        return stored

    async def _follow(self, order_id: str, cause: Envelope, follow: FollowPayment) -> None:
        """Apply a payment's outcome to its order once, whatever status it finds it in."""
        for _ in range(MAX_WRITE_RACES):
            stored = await self._store.get(order_id)
            if stored is None:
                raise NotFound(f"payment event {cause.id} names unknown order {order_id!r}")
            async with self._store.unit_of_work(self._bus, cause=cause, stored=stored) as work:
                if work.handled_before:
                    return
                changed, events = follow(stored.order, utcnow())
                work.save(changed)
                work.publish(changed, events)
            if work.committed:
                return
        raise Conflict(f"order {order_id!r} kept changing while handling {cause.type}")

    async def _user_known(self, user_id: str) -> bool:
        """Whether the replica has the user, waiting a bounded time for it to arrive."""
        if await self._store.knows_user(user_id):
            return True
        arrival, waiting = self._arrivals.get(user_id, (asyncio.Event(), 0))
        self._arrivals[user_id] = (arrival, waiting + 1)
        try:
            if await self._store.knows_user(user_id):
                return True
            await asyncio.wait_for(arrival.wait(), self._replica_wait)
        except TimeoutError:
            pass
        finally:
            arrival, waiting = self._arrivals.get(user_id, (arrival, 1))
            if waiting <= 1:
                self._arrivals.pop(user_id, None)
            else:
                self._arrivals[user_id] = (arrival, waiting - 1)
        return await self._store.knows_user(user_id)
