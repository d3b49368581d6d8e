"""The orders document store's contract: every adapter must pass every test here."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.modules.orders.documents import DuplicateOrder, OrderDocuments
from app.modules.orders.store import open_order_documents
from app.modules.orders.store_mongo import PymongoOrderDocuments

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite-memory", "sqlite-file", "mongomock"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    urls = {
        "sqlite-memory": "sqlite:///:memory:",
        "sqlite-file": f"sqlite:///{tmp_path}/data/orders.db",
        "mongomock": "mongomock://localhost/orders_test",
    }
    return urls[request.param]


@pytest.fixture
async def documents(store_url: str) -> AsyncIterator[OrderDocuments]:
    store = open_order_documents(store_url)
    await store.open()
    yield store
    await store.close()


def an_order(
    order_id: str,
    *,
    user_id: str = "user-1",
    status: str = "PENDING",
    outbox: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "_id": order_id,
        "user_id": user_id,
        "status": status,
        "currency": "EUR",
        "total": 3_500,
        "items": [
            {"sku": "SKU-1", "quantity": 2, "unit_price": 1_500, "options": {"gift": True}},
            {"sku": "SKU-2", "quantity": 1, "unit_price": 500, "options": {"note": None}},
        ],
        "outbox": outbox if outbox is not None else [],
    }


def an_event(event_id: str) -> dict[str, Any]:
    return {"id": event_id, "type": "OrderPlaced", "payload": {"total": 3_500}}


async def test_an_inserted_order_reads_back_with_its_nested_items_at_rev_1(
    documents: OrderDocuments,
) -> None:
    order = an_order("order-1", outbox=[an_event("event-1")])

    await documents.insert_order(order)

    assert await documents.get_order("order-1") == {**order, "rev": 1}
    assert "rev" not in order


async def test_an_unknown_order_reads_as_none(documents: OrderDocuments) -> None:
    assert await documents.get_order("order-missing") is None


async def test_returned_documents_are_copies_the_caller_may_mutate(
    documents: OrderDocuments,
) -> None:
    await documents.insert_order(an_order("order-1"))

    read = await documents.get_order("order-1")
    assert read is not None
    read["items"][0]["quantity"] = 999
    read["status"] = "TAMPERED"
    updated = await documents.update_order("order-1", expected_rev=1, set_fields={})
    assert updated is not None
    updated["items"].clear()

    again = await documents.get_order("order-1")
    assert again is not None
    assert again["status"] == "PENDING"
    assert again["items"][0]["quantity"] == 2
    assert len(again["items"]) == 2


async def test_inserting_an_existing_id_raises_duplicate_order_and_keeps_the_first(
    documents: OrderDocuments,
) -> None:
    await documents.insert_order(an_order("order-1", status="PENDING"))

    with pytest.raises(DuplicateOrder):
        await documents.insert_order(an_order("order-1", status="PAID"))

    stored = await documents.get_order("order-1")
    assert stored is not None
    assert stored["status"] == "PENDING"


async def test_an_update_sets_fields_appends_events_and_handled_and_bumps_rev(
    documents: OrderDocuments,
) -> None:
    await documents.insert_order(an_order("order-1", outbox=[an_event("event-1")]))

    updated = await documents.update_order(
        "order-1",
        expected_rev=1,
        set_fields={"status": "PAID", "payment": {"id": "pay-1", "attempts": 1}},
        push_outbox=[an_event("event-2"), an_event("event-3")],
        add_handled="message-1",
    )
    again = await documents.update_order(
        "order-1", expected_rev=2, set_fields={}, add_handled="message-2"
    )

    assert updated is not None
    assert updated["status"] == "PAID"
    assert updated["payment"] == {"id": "pay-1", "attempts": 1}
    assert [event["id"] for event in updated["outbox"]] == ["event-1", "event-2", "event-3"]
    assert updated["handled"] == ["message-1"]
    assert updated["rev"] == 2
    assert again is not None
    assert again["handled"] == ["message-1", "message-2"]
    assert again["rev"] == 3
    assert await documents.get_order("order-1") == again


async def test_an_update_with_a_stale_rev_returns_none_and_changes_nothing(
    documents: OrderDocuments,
) -> None:
    await documents.insert_order(an_order("order-1"))
    await documents.update_order("order-1", expected_rev=1, set_fields={"status": "PAID"})
    before = await documents.get_order("order-1")

    stale = await documents.update_order(
        "order-1",
        expected_rev=1,
        set_fields={"status": "CANCELLED"},
        push_outbox=[an_event("event-9")],
        add_handled="message-9",
    )

    assert stale is None
    assert await documents.get_order("order-1") == before


async def test_an_update_of_a_missing_order_returns_none(documents: OrderDocuments) -> None:
    assert await documents.update_order("order-missing", expected_rev=1, set_fields={}) is None


async def test_two_concurrent_updates_from_the_same_rev_let_exactly_one_win(
    documents: OrderDocuments,
) -> None:
    await documents.insert_order(an_order("order-1"))

    results = await asyncio.gather(
        documents.update_order("order-1", expected_rev=1, set_fields={"status": "PAID"}),
        documents.update_order("order-1", expected_rev=1, set_fields={"status": "CANCELLED"}),
    )

    winners = [result for result in results if result is not None]
    assert len(winners) == 1
    assert await documents.get_order("order-1") == winners[0]
    assert winners[0]["rev"] == 2


@pytest.mark.parametrize(
    ("set_fields", "push_outbox", "add_handled"),
    [
        ({"rev": 7}, [], None),
        ({"_id": "order-2"}, [], None),
        ({"payment.id": "pay-1"}, [], None),
        ({"$inc": 1}, [], None),
        ({"outbox": []}, [{"id": "event-1"}], None),
        ({"handled": []}, [], "message-1"),
    ],
)
async def test_an_update_refuses_fields_the_store_or_its_arguments_own(
    documents: OrderDocuments,
    set_fields: dict[str, Any],
    push_outbox: list[dict[str, Any]],
    add_handled: str | None,
) -> None:
    await documents.insert_order(an_order("order-1"))

    with pytest.raises(ValueError):
        await documents.update_order(
            "order-1",
            expected_rev=1,
            set_fields=set_fields,
            push_outbox=push_outbox,
            add_handled=add_handled,
        )

    assert await documents.get_order("order-1") == {**an_order("order-1"), "rev": 1}


async def test_cursor_pages_cover_a_users_orders_exactly_once_in_id_order(
    documents: OrderDocuments,
) -> None:
    mine = [f"order-{number:02d}" for number in range(11)]
    theirs = ["order-03a", "order-99"]
    for order_id in random.Random(4).sample(mine + theirs, len(mine + theirs)):
        owner = "user-2" if order_id in theirs else "user-1"
        await documents.insert_order(an_order(order_id, user_id=owner))

    seen: list[str] = []
    after: str | None = None
    while page := await documents.list_orders(user_id="user-1", status=None, after=after, limit=4):
        assert len(page) <= 4
        seen.extend(doc["_id"] for doc in page)
        after = page[-1]["_id"]

    assert seen == sorted(mine)


async def test_listing_filters_by_status_and_by_user_and_status(
    documents: OrderDocuments,
) -> None:
    await documents.insert_order(an_order("order-1", user_id="user-1", status="PAID"))
    await documents.insert_order(an_order("order-2", user_id="user-1", status="PENDING"))
    await documents.insert_order(an_order("order-3", user_id="user-2", status="PAID"))
    await documents.update_order("order-2", expected_rev=1, set_fields={"status": "PAID"})

    paid = await documents.list_orders(user_id=None, status="PAID", after=None, limit=50)
    mine_paid = await documents.list_orders(user_id="user-1", status="PAID", after=None, limit=50)
    everything = await documents.list_orders(user_id=None, status=None, after=None, limit=50)
    pending = await documents.list_orders(user_id=None, status="PENDING", after=None, limit=50)

    assert [doc["_id"] for doc in paid] == ["order-1", "order-2", "order-3"]
    assert [doc["_id"] for doc in mine_paid] == ["order-1", "order-2"]
    assert [doc["_id"] for doc in everything] == ["order-1", "order-2", "order-3"]
    assert pending == []


async def test_a_limit_below_one_lists_nothing(documents: OrderDocuments) -> None:
    await documents.insert_order(an_order("order-1", outbox=[an_event("event-1")]))

    assert await documents.list_orders(user_id=None, status=None, after=None, limit=0) == []
    assert await documents.pending_outbox(0) == []


async def test_pending_outbox_returns_only_orders_with_events_in_id_order(
    documents: OrderDocuments,
) -> None:
    await documents.insert_order(an_order("order-3", outbox=[an_event("event-3")]))
    await documents.insert_order(an_order("order-1", outbox=[an_event("event-1")]))
    await documents.insert_order(an_order("order-2"))
    await documents.insert_order(an_order("order-4", outbox=[an_event("event-4")]))
    await documents.update_order(
        "order-2", expected_rev=1, set_fields={}, push_outbox=[an_event("event-2")]
    )
    await documents.remove_outbox_events("order-4", ["event-4"])

    pending = await documents.pending_outbox(limit=50)
    first_two = await documents.pending_outbox(limit=2)

    assert [doc["_id"] for doc in pending] == ["order-1", "order-2", "order-3"]
    assert [doc["_id"] for doc in first_two] == ["order-1", "order-2"]


async def test_removing_outbox_events_removes_only_those_ids_and_keeps_the_rev(
    documents: OrderDocuments,
) -> None:
    events = [an_event("event-1"), an_event("event-2"), an_event("event-3")]
    await documents.insert_order(an_order("order-1", outbox=events))
    await documents.update_order("order-1", expected_rev=1, set_fields={"status": "PAID"})

    await documents.remove_outbox_events("order-1", ["event-1", "event-3", "event-unknown"])
    await documents.remove_outbox_events("order-missing", ["event-1"])

    stored = await documents.get_order("order-1")
    assert stored is not None
    assert stored["outbox"] == [an_event("event-2")]
    assert stored["rev"] == 2
    assert await documents.update_order("order-1", expected_rev=2, set_fields={}) is not None


async def test_remember_user_keeps_the_highest_sequence(documents: OrderDocuments) -> None:
    assert not await documents.knows_user("user-1")

    await documents.remember_user("user-1", 5)
    await documents.remember_user("user-1", 3)
    await documents.remember_user("user-2", 1)
    await documents.remember_user("user-2", 4)

    assert await documents.knows_user("user-1")
    assert not await documents.knows_user("user-3")
    assert await documents.user_sequence("user-1") == 5
    assert await documents.user_sequence("user-2") == 4
    assert await documents.user_sequence("user-3") is None


async def test_values_shaped_like_mongodb_operators_are_plain_data(
    documents: OrderDocuments,
) -> None:
    order = an_order("$where", user_id="$where", status='{"$ne": null}')
    order["items"][0]["sku"] = '{"$gt": ""}'
    await documents.insert_order(order)
    await documents.insert_order(an_order("order-1", user_id="user-1"))
    await documents.remember_user("$where", 1)

    stored = await documents.get_order("$where")
    by_user = await documents.list_orders(user_id="$where", status=None, after=None, limit=50)
    by_status = await documents.list_orders(
        user_id=None, status='{"$ne": null}', after=None, limit=50
    )
    operator_shaped_user = await documents.list_orders(
        user_id='{"$gt": ""}', status=None, after=None, limit=50
    )

    assert stored == {**order, "rev": 1}
    assert [doc["_id"] for doc in by_user] == ["$where"]
    assert [doc["_id"] for doc in by_status] == ["$where"]
    assert operator_shaped_user == []
    assert await documents.get_order('{"$gt": ""}') is None
    assert await documents.knows_user("$where")
    assert not await documents.knows_user('{"$gt": ""}')


async def test_opening_twice_is_harmless_and_the_store_answers_pings(
    documents: OrderDocuments,
) -> None:
    await documents.insert_order(an_order("order-1"))

    await documents.open()
    await documents.ping()

    assert await documents.get_order("order-1") is not None


async def test_a_file_store_keeps_its_documents_across_close_and_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/nested/dir/orders.db"
    first = open_order_documents(url)
    await first.open()
    await first.insert_order(an_order("order-1", outbox=[an_event("event-1")]))
    updated = await first.update_order("order-1", expected_rev=1, set_fields={"status": "PAID"})
    await first.remember_user("user-1", 7)
    await first.close()

    second = open_order_documents(url)
    await second.open()

    assert (tmp_path / "nested" / "dir" / "orders.db").is_file()
    assert await second.get_order("order-1") == updated
    assert [doc["_id"] for doc in await second.pending_outbox(limit=10)] == ["order-1"]
    assert await second.knows_user("user-1")
    await second.close()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite://", "sqlite-documents"),
        ("sqlite:///:memory:", "sqlite-documents"),
        ("mongomock://", "mongomock"),
        ("mongomock://localhost/shop", "mongomock"),
    ],
)
async def test_the_url_scheme_chooses_the_adapter(url: str, kind: str) -> None:
    store = open_order_documents(url)
    await store.open()

    await store.ping()

    assert store.kind == kind
    await store.close()


async def test_a_mongodb_url_names_the_database_and_hides_the_password() -> None:
    store = open_order_documents("mongodb://app:s3cret@db.example:27017/shop?authSource=admin")

    assert store.kind == "mongodb"
    assert store.display_url == "mongodb://app:***@db.example:27017/shop?authSource=admin"
    assert isinstance(store, PymongoOrderDocuments)
    assert store.database.name == "shop"
    await store.close()


async def test_a_mongodb_url_without_a_path_uses_the_default_database() -> None:
    store = open_order_documents("mongodb://db.example:27017")

    assert isinstance(store, PymongoOrderDocuments)
    assert store.database.name == "seams_orders"
    assert store.display_url == "mongodb://db.example:27017"
    await store.close()


async def test_an_unknown_scheme_is_refused_with_the_accepted_ones_listed() -> None:
    with pytest.raises(ValueError, match=r"sqlite://.*mongomock://.*mongodb://.*mongodb\+srv://"):
        open_order_documents("postgresql://user:pw@host/orders")
