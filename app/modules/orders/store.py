"""The orders module's private store: typed Orders over order documents.

`open_order_documents` picks the document adapter by URL (documents.py is their port).
`OrderStore` is the only place that knows a document's shape: `_id`, ISO dates, the order's
pending outbox events, its inbox (`handled`) and its idempotent response. An order and the
events it causes are one document, written atomically; the events wait in its `outbox`
until the relay has delivered them (docs/decisions/0014-orders-store.md).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec

from app.bus import Envelope, ModuleBus
from app.bus.unit_of_work import UnitOfWork
from app.kernel.idempotency import KeyTaken, StoredResponse
from app.kernel.ids import isoformat, utcnow
from app.modules.orders.documents import Document, DuplicateIdempotencyKey, OrderDocuments
from app.modules.orders.order import Order, OrderStatus

__all__ = [  # OrderDocuments too: the module spec names the port beside its factory
    "ACCEPTED_SCHEMES",
    "OrderDocuments",
    "OrderStore",
    "StoredOrder",
    "open_order_documents",
    "redact_password",
]

ACCEPTED_SCHEMES = ("sqlite://", "mongomock://", "mongodb://", "mongodb+srv://")
DEFAULT_MONGO_DATABASE = "seams_orders"


def redact_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hosts}"))


def open_order_documents(url: str) -> OrderDocuments:
    """Choose the adapter by URL; call open() on the result before use."""
    # Imported here, so a process pays for pymongo or mongomock only when it uses them.
    if url.startswith("sqlite://"):
        from app.modules.orders.store_sqlite import SqliteOrderDocuments

        path = url.removeprefix("sqlite://").removeprefix("/")
        return SqliteOrderDocuments(None if path in ("", ":memory:") else path, url)
    if url.startswith("mongomock://"):
        import mongomock  # a test dependency only

        from app.modules.orders.store_mongo import PymongoOrderDocuments

        name = urlsplit(url).path.strip("/") or DEFAULT_MONGO_DATABASE
        fake: Any = mongomock.MongoClient().get_database(name)
        return PymongoOrderDocuments(fake, kind="mongomock", display_url=url)
    if url.startswith(("mongodb://", "mongodb+srv://")):
        from pymongo import AsyncMongoClient

        from app.modules.orders.store_mongo import PymongoOrderDocuments

        client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(url)
        database = client.get_default_database(DEFAULT_MONGO_DATABASE)
        return PymongoOrderDocuments(database, kind="mongodb", display_url=redact_password(url))
    raise ValueError(
        f"unsupported orders store URL {redact_password(url)!r}; "
        f"accepted schemes: {', '.join(ACCEPTED_SCHEMES)}"
    )


@dataclass(frozen=True)
class StoredOrder:
    """An order as read, with what writing it back needs: its revision (optimistic writes)
    and the ids of the events already applied to it (its inbox)."""

    order: Order
    rev: int
    handled: Sequence[str]


class OrderWork(UnitOfWork):
    """One order document's write: the order (new, or changed from `stored`), its events,
    the applied event's id and the idempotent response, in one atomic document write when
    the block ends."""

    def __init__(self, bus: ModuleBus, cause: Envelope | None, stored: StoredOrder | None):
        super().__init__(bus, cause)
        self.stored = stored
        self.order: Order | None = None
        self.handled_before = (
            cause is not None and stored is not None and (cause.id in stored.handled)
        )

    def save(self, order: Order) -> None:
        """The order to write: inserted if the work began with none, else changed."""
        self.order = order


class DocumentOutbox:
    """The relay's view of the orders' outbox: the events waiting in their documents."""

    def __init__(self, documents: OrderDocuments) -> None:
        self._documents = documents

    async def pending(self, limit: int) -> list[Envelope]:
        documents = await self._documents.pending_outbox(limit)
        return [
            msgspec.convert(entry, Envelope)
            for document in documents
            for entry in document["outbox"]
        ]

    async def mark_delivered(self, envelopes: Sequence[Envelope]) -> None:
        by_order: dict[str, list[str]] = defaultdict(list)
        for envelope in envelopes:
            by_order[envelope.aggregate_id].append(envelope.id)
        for order_id, event_ids in by_order.items():
            await self._documents.remove_outbox_events(order_id, event_ids)


class OrderStore:
    """Orders in and out of their documents: the one mapping between the two shapes."""

    def __init__(self, documents: OrderDocuments) -> None:
        self._documents = documents
        self.outbox = DocumentOutbox(documents)  # the relay's view (Assembly.outbox)

    @asynccontextmanager
    async def unit_of_work(
        self, bus: ModuleBus, *, cause: Envelope | None = None, stored: StoredOrder | None = None
    ) -> AsyncIterator[OrderWork]:
        """Write one order and what comes with it atomically when the block ends: a new
        order (no `stored`), or the change of `stored` only if nobody wrote it since it was
        read (`committed` stays False otherwise). A cause `stored` has applied already sets
        `handled_before`, and nothing is written."""
        work = OrderWork(bus, cause, stored)
        yield work
        if work.handled_before or work.cancelled or work.order is None:
            return
        if stored is None:
            await self._insert(work.order, work)
        elif not await self._save(stored, work.order, work):
            return
        work.finish()

    async def _insert(self, order: Order, work: OrderWork) -> None:
        document = _document(order)
        document["outbox"] = [msgspec.to_builtins(envelope) for envelope in work.envelopes]
        document["handled"] = []
        if work.response is not None:
            write, response = work.response
            document["idempotency"] = {
                "key": _idempotency_key(write.scope, write.key),
                "fingerprint": response.fingerprint,
                "status": response.status,
                "body": response.body.decode(),
                "expires_at": isoformat(response.expires_at),
            }
        try:
            await self._documents.insert_order(document)
        except DuplicateIdempotencyKey:
            raise KeyTaken from None

    async def _save(self, stored: StoredOrder, changed: Order, work: OrderWork) -> bool:
        before = _document(stored.order)
        fields = {
            name: value for name, value in _document(changed).items() if before[name] != value
        }
        written = await self._documents.update_order(
            changed.id,
            expected_rev=stored.rev,
            set_fields=fields,
            push_outbox=[msgspec.to_builtins(envelope) for envelope in work.envelopes],
            add_handled=None if work.cause is None else work.cause.id,
        )
        return written is not None

    async def get(self, order_id: str) -> StoredOrder | None:
        document = await self._documents.get_order(order_id)
        if document is None:
            return None
        return StoredOrder(_order(document), document["rev"], document.get("handled", []))

    async def page(
        self, *, user_id: str | None, status: OrderStatus | None, after: str | None, limit: int
    ) -> list[Order]:
        documents = await self._documents.list_orders(
            user_id=user_id,
            status=None if status is None else status.value,
            after=after,
            limit=limit,
        )
        return [_order(document) for document in documents]

    async def remembered(self, scope: str, key: str) -> StoredResponse | None:
        """The response stored for a key; an expired one is forgotten (the key is free)."""
        document = await self._documents.find_by_idempotency_key(_idempotency_key(scope, key))
        if document is None:
            return None
        record = document["idempotency"]
        stored = StoredResponse(
            fingerprint=record["fingerprint"],
            status=record["status"],
            body=record["body"].encode(),
            expires_at=datetime.fromisoformat(record["expires_at"]),
        )
        if stored.expired:
            await self._documents.forget_idempotency_key(document["_id"])
            return None
        return stored

    async def purge(self, cutoff: datetime) -> dict[str, int]:
        """Empty the inboxes of orders that handled nothing since the cutoff and drop the
        expired idempotency keys (docs/decisions/0035-retention.md); the events still in an
        outbox are never touched, and delivered ones left their document when delivered."""
        return await self._documents.purge(cutoff, utcnow())

    async def remember_user(self, user_id: str, sequence: int) -> None:
        await self._documents.remember_user(user_id, sequence)

    async def knows_user(self, user_id: str) -> bool:
        return await self._documents.knows_user(user_id)


def _document(order: Order) -> Document:
    """The order's fields as JSON values (ISO dates), its id as `_id`."""
    document: Document = msgspec.to_builtins(order)
    document["_id"] = document.pop("id")
    document["items"] = list(document["items"])
    return document


def _order(document: Document) -> Order:
    """The order in a document; the document's other keys (outbox, handled, rev,
    idempotency) are the store's own."""
    return msgspec.convert({**document, "id": document["_id"]}, Order)


def _idempotency_key(scope: str, key: str) -> str:
    return f"{scope}\x1f{key}"
