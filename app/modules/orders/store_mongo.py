"""Order documents in a pymongo-API database: mongomock in tests, MongoDB via AsyncMongoClient.

Only atomic single-document writes, because mongomock has no transactions.

Its schema has a version too: the document {_id: "schema", version: N} in the `meta`
collection, and upgrade steps (version N to N+1), each safe to run again, since no
transaction holds a step and its stamp together (docs/decisions/0028-migrations.md).

A server that cannot be reached is StoreUnavailable, as for the SQL stores: 503 with
Retry-After to a request, a wait without spending attempts to an event
(docs/decisions/0038-orders-store-outages-and-purges.md).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from app.kernel.ids import utcnow
from app.kernel.migrations import (
    UNVERSIONED,
    SchemaRefused,
    SchemaState,
    ahead_message,
    steps_state,
)
from app.kernel.sql import Reachability
from app.modules.orders.documents import (
    DuplicateIdempotencyKey,
    DuplicateOrder,
    check_set_fields,
    expired,
    stamp,
)

log = logging.getLogger("app.stores")  # where the SQL stores say their outages too

Store = TypeVar("Store", bound=type)


def _store_boundary(cls: Store) -> Store:
    """Every public coroutine method of the class runs inside its `_reachability`: the one
    place a server away becomes StoreUnavailable (app/kernel/sql.py Reachability), rather
    than a try in each method."""
    for name, method in list(vars(cls).items()):
        if not name.startswith("_") and inspect.iscoroutinefunction(method):
            setattr(cls, name, _reaching(method))
    return cls


def _reaching(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def reaching(self: PymongoOrderDocuments, *args: Any, **kwargs: Any) -> Any:
        with self._reachability.checked():
            return await method(self, *args, **kwargs)

    return reaching


async def _settle(result: Any) -> Any:
    """mongomock answers at once; pymongo's async API answers with an awaitable."""
    return await result if inspect.isawaitable(result) else result


async def _to_list(cursor: Any) -> list[dict[str, Any]]:
    if inspect.iscoroutinefunction(getattr(cursor, "to_list", None)):
        documents: list[dict[str, Any]] = await cursor.to_list()
        return documents
    return list(cursor)


@_store_boundary
class PymongoOrderDocuments:
    """Collections `orders` (with a `rev` for conditional writes) and `users` (the replica).

    Filters compare plain values: the port's ids are str, and MongoDB never reads a str as an
    operator (`$eq` would say the same but makes mongomock ~3x slower per lookup).
    """

    def __init__(self, database: Any, *, kind: str = "mongodb", display_url: str = "") -> None:
        self.database = database
        self.kind = kind
        self.display_url = display_url or f"{kind}:///{database.name}"
        self.orders = database.get_collection("orders")
        self.users = database.get_collection("users")
        # pymongo's server-away errors (ConnectionFailure and its kin: no server selected, a
        # connection reset, a network timeout, no primary) are what `unreachable` matches.
        self._reachability = Reachability(log, self.display_url)

    async def open(self) -> None:
        # create_index is a no-op when the same index already exists, so open() is idempotent.
        await _settle(self.orders.create_index([("user_id", ASCENDING), ("_id", ASCENDING)]))
        await _settle(self.orders.create_index([("status", ASCENDING), ("_id", ASCENDING)]))
        await _settle(self.orders.create_index("outbox.id", sparse=True))
        await _settle(self.orders.create_index("idempotency.key", unique=True, sparse=True))
        await _settle(self.orders.create_index("handled_at", sparse=True))
        await self.migrate()

    # --- its schema's version (app.kernel.migrations.Versioned) ---------------------------

    @property
    def versioned(self) -> bool:
        return True

    async def schema_state(self) -> SchemaState:
        record = await _settle(self.database.get_collection("meta").find_one({"_id": "schema"}))
        version = None if record is None else int(record["version"])
        held = version is None and await _settle(self.orders.find_one({}, {"_id": 1})) is not None
        return steps_state("orders", version, MONGO_HEAD, held)

    async def migrate(self) -> SchemaState:
        """To the head: each step from the store's version on (a store from release 8e8cbb7,
        which recorded none, is version 1), then the stamp; SchemaRefused if it is ahead."""
        state = await self.schema_state()
        if state.ahead:
            raise SchemaRefused(ahead_message(state))
        if state.pending:
            version = 1 if state.current == UNVERSIONED else int(str(state.current))
            for step in MONGO_STEPS[version - 1 :]:
                await step(self)
        if not state.at_head:
            await _settle(
                self.database.get_collection("meta").update_one(
                    {"_id": "schema"}, {"$set": {"version": MONGO_HEAD}}, upsert=True
                )
            )
        return await self.schema_state()

    async def ping(self) -> None:
        await _settle(self.database.command("ping"))

    async def close(self) -> None:
        await _settle(self.database.client.close())

    async def insert_order(self, doc: dict[str, Any]) -> None:
        try:
            await _settle(self.orders.insert_one({**doc, "rev": 1}))
        except DuplicateKeyError as error:
            if await self.get_order(doc["_id"]) is None and "idempotency" in doc:
                raise DuplicateIdempotencyKey(doc["idempotency"]["key"]) from error
            raise DuplicateOrder(doc["_id"]) from error

    async def get_order(self, order_id: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await _settle(self.orders.find_one({"_id": order_id}))
        return doc

    async def update_order(
        self,
        order_id: str,
        *,
        expected_rev: int,
        set_fields: dict[str, Any],
        push_outbox: Sequence[dict[str, Any]] = (),
        add_handled: str | None = None,
    ) -> dict[str, Any] | None:
        check_set_fields(set_fields, push_outbox, add_handled)
        push: dict[str, Any] = {}
        if push_outbox:
            push["outbox"] = {"$each": list(push_outbox)}
        if add_handled is not None:
            push["handled"] = add_handled
        update: dict[str, Any] = {"$inc": {"rev": 1}}
        if add_handled is not None:
            set_fields = {**set_fields, "handled_at": stamp(utcnow())}
        if set_fields:
            update["$set"] = set_fields
        if push:
            update["$push"] = push
        doc: dict[str, Any] | None = await _settle(
            self.orders.find_one_and_update(
                {"_id": order_id, "rev": expected_rev},
                update,
                return_document=ReturnDocument.AFTER,
            )
        )
        return doc

    async def list_orders(
        self, *, user_id: str | None, status: str | None, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        if limit < 1:
            return []  # pymongo reads limit(0) as "no limit"
        query: dict[str, Any] = {}
        if user_id is not None:
            query["user_id"] = user_id
        if status is not None:
            query["status"] = status
        if after is not None:
            query["_id"] = {"$gt": after}
        return await _to_list(self.orders.find(query).sort("_id", ASCENDING).limit(limit))

    async def pending_outbox(self, limit: int) -> list[dict[str, Any]]:
        if limit < 1:
            return []
        query = {"outbox.id": {"$exists": True}}
        return await _to_list(self.orders.find(query).sort("_id", ASCENDING).limit(limit))

    async def remove_outbox_events(self, order_id: str, event_ids: Sequence[str]) -> None:
        await _settle(
            self.orders.update_one(
                {"_id": order_id},
                {"$pull": {"outbox": {"id": {"$in": list(event_ids)}}}},
            )
        )

    async def remember_user(self, user_id: str, sequence: int) -> None:
        await _settle(
            self.users.update_one({"_id": user_id}, {"$max": {"sequence": sequence}}, upsert=True)
        )

    async def find_by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        doc: dict[str, Any] | None = await _settle(self.orders.find_one({"idempotency.key": key}))
        return doc

    async def forget_idempotency_key(self, order_id: str) -> None:
        await _settle(self.orders.update_one({"_id": order_id}, {"$unset": {"idempotency": ""}}))

    async def purge(self, cutoff: datetime, now: datetime) -> dict[str, int]:
        """Document by document, each write conditional on what was read: an id added
        meanwhile moves `handled_at`, a key taken meanwhile is another key, and nothing goes."""
        return {
            "inbox": await self._purge_handled(cutoff),
            "idempotency_keys": await self._purge_expired_keys(now),
        }

    async def _purge_handled(self, cutoff: datetime) -> int:
        # Orders stamped before the cutoff only: the ones from before `handled_at` were
        # stamped once by the upgrade to version 2, not at every purge.
        query = {"handled_at": {"$lt": stamp(cutoff)}}
        removed = 0
        for doc in await _to_list(self.orders.find(query, {"handled": 1, "handled_at": 1})):
            result = await _settle(
                self.orders.update_one(
                    {"_id": doc["_id"], "handled_at": doc["handled_at"]},
                    {"$set": {"handled": []}, "$unset": {"handled_at": ""}},
                )
            )
            removed += len(doc.get("handled", [])) if result.modified_count else 0
        return removed

    async def _purge_expired_keys(self, now: datetime) -> int:
        # Dates of any precision: a string bound a second late finds every candidate, and
        # each is checked as a date before it goes.
        bound = stamp(now + timedelta(seconds=1))
        query = {"idempotency.expires_at": {"$lt": bound}}
        removed = 0
        for doc in await _to_list(self.orders.find(query, {"idempotency": 1})):
            record = doc["idempotency"]
            if not expired(record["expires_at"], now):
                continue
            result = await _settle(
                self.orders.update_one(
                    {"_id": doc["_id"], "idempotency.key": record["key"]},
                    {"$unset": {"idempotency": ""}},
                )
            )
            removed += result.modified_count
        return removed

    async def knows_user(self, user_id: str) -> bool:
        found = await _settle(self.users.find_one({"_id": user_id}, {"_id": 1}))
        return found is not None

    async def user_sequence(self, user_id: str) -> int | None:
        found = await _settle(self.users.find_one({"_id": user_id}, {"sequence": 1}))
        return None if found is None else int(found["sequence"])


async def _stamp_handled_at(documents: PymongoOrderDocuments) -> None:
    """Version 1 to 2: `handled_at` (the purge's clock, docs/decisions/0035-retention.md) on
    every order with handled ids, as now: when they came is not known, so they go one
    retention after the upgrade, never sooner. Once: the purge does not look for unstamped
    orders (a scan no index serves, docs/decisions/0038-orders-store-outages-and-purges.md),
    and run again before its version is stamped it finds only orders it has not stamped."""
    await _settle(
        documents.orders.update_many(
            {"handled.0": {"$exists": True}, "handled_at": {"$exists": False}},
            {"$set": {"handled_at": stamp(utcnow())}},
        )
    )


# Version 1: the documents of release 8e8cbb7. A change to their shape is a new step here.
MONGO_STEPS = (_stamp_handled_at,)
MONGO_HEAD = len(MONGO_STEPS) + 1
