"""The orders documents on MongoDB when the server is away: StoreUnavailable, as the SQL
stores say it (docs/decisions/0038-orders-store-outages-and-purges.md). An event waits for
the server without spending its attempts and is handled once it is back; a request is
answered 503 with Retry-After; the outage is said once. A duplicate key or an error the
server answered stays what it is. On mongomock, whose collection is made to raise what
pymongo raises when the server is away."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import mongomock
import pymongo.errors
import pytest

from app.kernel.errors import StoreUnavailable
from app.kernel.ids import utcnow
from app.modules.orders.documents import DuplicateOrder
from app.modules.orders.store_mongo import PymongoOrderDocuments
from app.modules.payments.contracts import PaymentSucceeded
from tests.module.orders.test_order_service import orders_alone, payment
from tests.support.waits import until

pytestmark = pytest.mark.anyio

AWAY = [
    pymongo.errors.ServerSelectionTimeoutError("localhost:27017: [Errno 111] Connection refused"),
    pymongo.errors.AutoReconnect("connection closed"),
    pymongo.errors.ConnectionFailure("connection reset"),
    pymongo.errors.NetworkTimeout("localhost:27017: timed out"),
    pymongo.errors.NotPrimaryError("not primary"),
]


class Away:
    """A collection whose every call raises `error` while one is set, counting them by
    method; otherwise the collection itself answers."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.error: Exception | None = None
        self.failed: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.collection, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.error is not None:
                self.failed[name] += 1
                raise self.error
            return attribute(*args, **kwargs)

        return call


def away_orders(documents: PymongoOrderDocuments) -> Away:
    away = Away(documents.orders)
    documents.orders = away
    return away


def said(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


@pytest.mark.parametrize("error", AWAY, ids=lambda error: type(error).__name__)
async def test_a_server_away_is_store_unavailable_said_once(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    documents = PymongoOrderDocuments(mongomock.MongoClient().get_database("away"))
    await documents.open()
    away = away_orders(documents)
    away.error = error
    caplog.set_level(logging.WARNING, "app.stores")
    calls: list[Callable[[], Any]] = [
        lambda: documents.get_order("o1"),
        lambda: documents.list_orders(user_id=None, status=None, after=None, limit=10),
        lambda: documents.insert_order({"_id": "o1", "user_id": "u", "status": "PAID"}),
        lambda: documents.pending_outbox(10),
        lambda: documents.find_by_idempotency_key("k"),
        lambda: documents.remove_outbox_events("o1", ["e1"]),
        lambda: documents.purge(utcnow(), utcnow()),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as raised:
            await call()
        assert raised.value.status == 503 and raised.value.headers == {"Retry-After": "2"}
        assert raised.value.__cause__ is error

    away.error = None
    assert await documents.get_order("o1") is None

    assert len(said(caplog, "is unreachable")) == 1
    assert len(said(caplog, "answers again")) == 1


async def test_what_the_server_answered_is_not_an_outage() -> None:
    documents = PymongoOrderDocuments(mongomock.MongoClient().get_database("answers"))
    await documents.open()
    await documents.insert_order({"_id": "o1", "user_id": "u", "status": "PAID"})
    with pytest.raises(DuplicateOrder):
        await documents.insert_order({"_id": "o1", "user_id": "u", "status": "PAID"})
    away_orders(documents).error = pymongo.errors.OperationFailure("unknown operator: $foo")
    with pytest.raises(pymongo.errors.OperationFailure):
        await documents.get_order("o1")


async def test_an_event_waits_for_the_server_without_spending_attempts(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with orders_alone("mongomock", bus_max_attempts="3") as orders:
        order = await orders.place(await orders.user())
        away = away_orders(orders.store)  # type: ignore[arg-type]
        away.error = pymongo.errors.ServerSelectionTimeoutError("no servers")

        # In process, a publish returns once the event is handled: so in a task.
        delivered = asyncio.create_task(orders.scenario.redeliver(payment(PaymentSucceeded, order)))
        # Twice the attempts the event has: each would have spent one before.
        await until(lambda: away.failed["find_one"] >= 6, "the handler met the outage")
        away.error = None
        await asyncio.wait_for(delivered, 10)
        await orders.seams.settle()

        assert (await orders.read(order["id"]))["status"] == "PAID"
        assert await orders.seams.runtime.bus.store.count_dead_letters() == 0
    assert said(caplog, "waits for its store to handle PaymentSucceeded")
    assert not said(caplog, "failed on PaymentSucceeded")  # no attempt spent


async def test_a_request_meanwhile_is_a_503_with_retry_after_said_once(
    anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with orders_alone("mongomock") as orders:
        order = await orders.place(await orders.user())
        caplog.set_level(logging.WARNING)
        away = away_orders(orders.store)  # type: ignore[arg-type]
        away.error = pymongo.errors.AutoReconnect("connection closed")

        answers = [await orders.seams.client.get(f"/api/orders/{order['id']}") for _ in range(3)]
        away.error = None
        back = await orders.seams.client.get(f"/api/orders/{order['id']}")

    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "2"
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert back.status_code == 200
    assert len(said(caplog, "unreachable")) == 1  # the store's, not one per request
