"""The orders domain: place, read and cancel orders; follow payments. No HTTP, no driver.

An order and the events it causes are one document, written atomically: the events wait
in the document's `outbox` until the relay has delivered them (decision 14).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from app.bus import Envelope, Event, ModuleBus
from app.kernel.errors import Conflict, Forbidden, InvalidInput, NotFound, TryAgain
from app.kernel.idempotency import Idempotency, IdempotentWrite, KeyTaken, StoredResponse
from app.kernel.identity import Caller
from app.kernel.ids import isoformat, new_id, utcnow
from app.modules.orders.contracts import OrderCancelled, OrderPlaced
from app.modules.orders.currencies import CIRCULATING_CODES
from app.modules.orders.store import DuplicateIdempotencyKey, OrderDocuments
from app.modules.payments.contracts import PaymentFailed, PaymentRefunded, PaymentSucceeded
from app.modules.users.contracts import UserRegistered

PENDING = "PENDING"
PAID = "PAID"
CANCELLED = "CANCELLED"
REFUNDED = "REFUNDED"
STATUSES = (PENDING, PAID, CANCELLED, REFUNDED)

MAX_WRITE_RACES = 20

Document = dict[str, Any]


class OrderService:
    def __init__(
        self,
        store: OrderDocuments,
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

    async def place_once(self, write: IdempotentWrite, **order: Any) -> tuple[StoredResponse, bool]:
        """Place an order at most once per idempotency key: (the response, replayed?)."""
        key = f"{write.scope}\x1f{write.key}"

        async def find() -> StoredResponse | None:
            found = await self._store.find_by_idempotency_key(key)
            if found is None:
                return None
            stored = _stored_response(found["idempotency"])
            if stored.expired:  # free the key for a new request
                await self._store.forget_idempotency_key(found["_id"])
                return None
            return stored

        async def execute() -> bytes:
            return write.render(await self.place(**order, remember=write))

        return await self._idempotency.run(write, find, execute)

    async def place(
        self,
        *,
        caller: Caller,
        user_id: str | None,
        currency: str,
        payment_token: str,
        items: list[Document],
        remember: IdempotentWrite | None = None,
    ) -> Document:
        if user_id is not None and user_id != caller.id:
            raise Forbidden(
                "user_id must be your own id, or left out: orders are placed by their user"
            )
        user_id = caller.id
        if currency not in CIRCULATING_CODES:
            raise InvalidInput(
                "currency", f"{currency!r} is not the ISO 4217 code of a circulating currency"
            )
        if not await self._user_known(user_id):
            raise TryAgain(
                f"user {user_id!r} is not known to orders yet: a registration reaches orders "
                f"a moment after it is accepted; retry after the Retry-After delay",
            )
        order_id = new_id()
        total = sum(item["quantity"] * item["unit_price"] for item in items)
        now = isoformat(utcnow())
        placed = self._bus.envelope(
            OrderPlaced(
                order_id=order_id,
                user_id=user_id,
                total=total,
                currency=currency,
                payment_token=payment_token,
            ),
            aggregate_id=order_id,
            sequence=1,
        )
        order: Document = {
            "_id": order_id,
            "user_id": user_id,
            "status": PENDING,
            "total": total,
            "currency": currency,
            "items": items,
            "payment_token": payment_token,
            "cancel_requested": False,
            "event_sequence": 1,
            "created_at": now,
            "updated_at": now,
            "outbox": [msgspec.to_builtins(placed)],
            "handled": [],
        }
        if remember is not None:
            response = remember.response_for(order)
            order["idempotency"] = {
                "key": f"{remember.scope}\x1f{remember.key}",
                "fingerprint": response.fingerprint,
                "status": response.status,
                "body": response.body.decode(),
                "expires_at": isoformat(response.expires_at),
            }
        try:
            await self._store.insert_order(order)
        except DuplicateIdempotencyKey:
            raise KeyTaken from None
        self._bus.committed([placed])
        return order

    async def get(self, order_id: str, caller: Caller) -> Document:
        """Another user's order is a 404, like one that does not exist."""
        order = await self._store.get_order(order_id)
        if order is None or not caller.may_see(order["user_id"]):
            raise NotFound(f"no order {order_id!r}")
        return order

    async def page(
        self,
        caller: Caller,
        *,
        user_id: str | None,
        status: str | None,
        after: str | None,
        limit: int,
    ) -> list[Document]:
        """A user lists only their own orders; an admin, anyone's."""
        if not caller.is_admin:
            if user_id not in (None, caller.id):
                return []
            user_id = caller.id
        return await self._store.list_orders(
            user_id=user_id, status=status, after=after, limit=limit
        )

    async def cancel(self, order_id: str, caller: Caller) -> tuple[Document, bool]:
        """Cancel an order (decision 8). Returns the order and whether it is final already:
        a PENDING order is CANCELLED at once; a PAID one waits for its refund."""
        for _ in range(MAX_WRITE_RACES):
            order = await self.get(order_id, caller)
            status = order["status"]
            if status == PAID and order["cancel_requested"]:
                return order, False
            if status not in (PENDING, PAID):
                raise Conflict(
                    f"order {order_id!r} is {status}: only PENDING or PAID orders can be cancelled"
                )
            fields: Document = {"cancel_requested": True}
            if status == PENDING:
                fields["status"] = CANCELLED
            changed = await self._write(
                order,
                fields,
                OrderCancelled(
                    order_id=order_id, user_id=order["user_id"], status_when_cancelled=status
                ),
            )
            if changed is not None:
                return changed, status == PENDING
        raise Conflict(f"order {order_id!r} is changing concurrently; try again")

    # Events.

    async def on_user_registered(self, event: UserRegistered, envelope: Envelope) -> None:
        await self._store.remember_user(event.user_id, envelope.sequence)
        waiting = self._arrivals.get(event.user_id)
        if waiting is not None:
            waiting[0].set()

    async def on_payment_succeeded(self, event: PaymentSucceeded, envelope: Envelope) -> None:
        await self._follow(event.order_id, envelope, {PENDING: PAID})

    async def on_payment_failed(self, event: PaymentFailed, envelope: Envelope) -> None:
        await self._follow(event.order_id, envelope, {PENDING: CANCELLED})

    async def on_payment_refunded(self, event: PaymentRefunded, envelope: Envelope) -> None:
        # A PAID order whose cancel was accepted ends REFUNDED; a CANCELLED one stays so.
        await self._follow(event.order_id, envelope, {PAID: REFUNDED})

    # Outbox (the relay's view of the orders store).

    async def pending(self, limit: int) -> list[Envelope]:
        orders = await self._store.pending_outbox(limit)
        return [msgspec.convert(entry, Envelope) for order in orders for entry in order["outbox"]]

    async def mark_delivered(self, envelopes: Sequence[Envelope]) -> None:
        by_order: dict[str, list[str]] = defaultdict(list)
        for envelope in envelopes:
            by_order[envelope.aggregate_id].append(envelope.id)
        for order_id, event_ids in by_order.items():
            await self._store.remove_outbox_events(order_id, event_ids)

    # Inside.

    async def _follow(self, order_id: str, cause: Envelope, moves: dict[str, str]) -> None:
        """Apply a payment's outcome to its order once, whatever order it finds it in."""
        for _ in range(MAX_WRITE_RACES):
            order = await self._store.get_order(order_id)
            if order is None:
                raise NotFound(f"payment event {cause.id} names unknown order {order_id!r}")
            if cause.id in order.get("handled", []):
                return
            target = moves.get(order["status"])
            fields: Document = {} if target is None else {"status": target}
            if await self._write(order, fields, None, handled=cause.id) is not None:
                return
        raise Conflict(f"order {order_id!r} kept changing while handling {cause.type}")

    async def _write(
        self,
        order: Document,
        fields: Document,
        event: Event | None,
        *,
        handled: str | None = None,
    ) -> Document | None:
        events: list[Envelope] = []
        if event is not None:
            sequence = order["event_sequence"] + 1
            events.append(self._bus.envelope(event, aggregate_id=order["_id"], sequence=sequence))
            fields = {**fields, "event_sequence": sequence}
        changed = await self._store.update_order(
            order["_id"],
            expected_rev=order["rev"],
            set_fields={**fields, "updated_at": isoformat(utcnow())},
            push_outbox=[msgspec.to_builtins(envelope) for envelope in events],
            add_handled=handled,
        )
        if changed is not None:
            self._bus.committed(events)
        return changed

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


def _stored_response(record: Document) -> StoredResponse:
    return StoredResponse(
        fingerprint=record["fingerprint"],
        status=record["status"],
        body=record["body"].encode(),
        expires_at=datetime.fromisoformat(record["expires_at"]),
    )
