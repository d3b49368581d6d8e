"""The port the orders store is written against: order documents in pymongo's vocabulary.

Two adapters implement it (docs/decisions/0014-orders-store.md): JSON documents in SQLite
(store_sqlite.py) for the data dir, --ephemeral and the benchmarks, and pymongo
(store_mongo.py) for mongomock in tests or a real MongoDB. Both import only this file, so
the port and its adapters import in one direction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

Document = dict[str, Any]

# Set by the adapter itself or by update_order's own arguments, so $set may not touch them.
# `handled_at`: when an id was last added to `handled` (the order's inbox), a stamp.
RESERVED_FIELDS = frozenset({"_id", "rev", "handled_at"})


def stamp(moment: datetime) -> str:
    """A UTC moment as fixed-width text, so stamps compare as strings compare
    (an ISO date without its microseconds would sort after one with them)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expired(expires_at: str, now: datetime) -> bool:
    """Whether an ISO date (any precision, Z or offset) is before `now`."""
    return datetime.fromisoformat(expires_at) < now


class DuplicateOrder(Exception):
    """An order with this `_id` is already stored."""


class DuplicateIdempotencyKey(Exception):
    """An order created under this idempotency key (doc["idempotency"]["key"]) is stored."""


class OrderDocuments(Protocol):
    """Order documents (dicts of JSON values, `_id` a str) with a revision for optimistic writes.

    A server that cannot be reached (MongoDB away) is app.kernel.errors.StoreUnavailable,
    whichever method met it: a request answers 503, an event waits without spending attempts.
    """

    kind: str
    display_url: str

    async def open(self) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def insert_order(self, doc: Document) -> None: ...

    async def get_order(self, order_id: str) -> Document | None: ...

    async def update_order(
        self,
        order_id: str,
        *,
        expected_rev: int,
        set_fields: Document,
        push_outbox: Sequence[Document] = (),
        add_handled: str | None = None,
    ) -> Document | None: ...

    async def list_orders(
        self, *, user_id: str | None, status: str | None, after: str | None, limit: int
    ) -> list[Document]: ...

    async def pending_outbox(self, limit: int) -> list[Document]: ...

    async def remove_outbox_events(self, order_id: str, event_ids: Sequence[str]) -> None: ...

    async def remember_user(self, user_id: str, sequence: int) -> None: ...

    async def knows_user(self, user_id: str) -> bool: ...

    async def user_sequence(self, user_id: str) -> int | None:
        """The highest event sequence remembered for the user; None for a user not known."""
        ...

    # An order placed with an Idempotency-Key carries {"idempotency": {"key": …, …}};
    # the key is unique across orders (DuplicateIdempotencyKey on insert).
    async def find_by_idempotency_key(self, key: str) -> Document | None: ...

    async def forget_idempotency_key(self, order_id: str) -> None: ...

    # Retention (docs/decisions/0035-retention.md): empty `handled` where `handled_at` is
    # before the cutoff, drop `idempotency` where it expired before `now`; the outbox is not
    # touched (delivered events leave it at once). Returns {"inbox": ids, "idempotency_keys": n}.
    async def purge(self, cutoff: datetime, now: datetime) -> dict[str, int]: ...


def check_set_fields(
    set_fields: Mapping[str, Any], push_outbox: Sequence[Any], add_handled: str | None
) -> None:
    """Reject updates MongoDB would refuse or read as paths, so both adapters agree."""
    for key in set_fields:
        if key in RESERVED_FIELDS or key.startswith("$") or "." in key:
            raise ValueError(f"set_fields may not contain {key!r}")
    if "outbox" in set_fields and push_outbox:
        raise ValueError("set_fields may not replace the outbox while pushing to it")
    if "handled" in set_fields and add_handled is not None:
        raise ValueError("set_fields may not replace handled while adding to it")
