"""The orders module's private document store: a narrow port in pymongo's vocabulary.

Two adapters implement it (ARCHITECTURE.md decision 14): JSON documents in SQLite for the
data dir, --ephemeral and the benchmarks, and pymongo for mongomock (tests) or a real MongoDB.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

ACCEPTED_SCHEMES = ("sqlite://", "mongomock://", "mongodb://", "mongodb+srv://")
DEFAULT_MONGO_DATABASE = "seams_orders"
# Set by the adapter itself or by update_order's own arguments, so $set may not touch them.
RESERVED_FIELDS = frozenset({"_id", "rev"})


class DuplicateOrder(Exception):
    """An order with this `_id` is already stored."""


class DuplicateIdempotencyKey(Exception):
    """An order created under this idempotency key (doc["idempotency"]["key"]) is stored."""


class OrderDocuments(Protocol):
    """Order documents (dicts of JSON values, `_id` a str) with a revision for optimistic writes."""

    kind: str
    display_url: str

    async def open(self) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...

    async def insert_order(self, doc: dict[str, Any]) -> None: ...

    async def get_order(self, order_id: str) -> dict[str, Any] | None: ...

    async def update_order(
        self,
        order_id: str,
        *,
        expected_rev: int,
        set_fields: dict[str, Any],
        push_outbox: Sequence[dict[str, Any]] = (),
        add_handled: str | None = None,
    ) -> dict[str, Any] | None: ...

    async def list_orders(
        self, *, user_id: str | None, status: str | None, after: str | None, limit: int
    ) -> list[dict[str, Any]]: ...

    async def pending_outbox(self, limit: int) -> list[dict[str, Any]]: ...

    async def remove_outbox_events(self, order_id: str, event_ids: Sequence[str]) -> None: ...

    async def remember_user(self, user_id: str, sequence: int) -> None: ...

    async def knows_user(self, user_id: str) -> bool: ...

    # An order placed with an Idempotency-Key carries {"idempotency": {"key": …, …}};
    # the key is unique across orders (DuplicateIdempotencyKey on insert).
    async def find_by_idempotency_key(self, key: str) -> dict[str, Any] | None: ...

    async def forget_idempotency_key(self, order_id: str) -> None: ...


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


def redact_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hosts = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{hosts}"))


def open_order_documents(url: str) -> OrderDocuments:
    """Choose the adapter by URL; call open() on the result before use."""
    # Adapters are imported here: they import DuplicateOrder from this module.
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
