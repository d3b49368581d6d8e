"""Delivered outbox rows, handled inbox ids and expired idempotency keys are purged after
the retention (docs/decisions/0010-delivery.md); what is not delivered yet is never purged."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from app.kernel.sql import SqlDatabase
from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio


async def rows(store: SqlDatabase, table: str) -> int:
    async with store.reading() as connection:
        found = await connection.execute(sa.text(f"SELECT count(*) FROM {table}"))
        return int(found.scalar_one())


def store_of(seams: Seams, name: str) -> SqlDatabase:
    store = next(m.store for m in seams.runtime.modules if m.module.name == name)
    assert isinstance(store, SqlDatabase)
    return store


async def test_purge_keeps_recent_rows_and_removes_old_ones() -> None:
    settings = fast_settings(ephemeral="true", idempotency_ttl_seconds="0.5")
    async with running(settings) as seams:
        user = await seams.register("Pat")
        await seams.client.post(
            "/api/orders",
            headers={**user["headers"], "Idempotency-Key": "once"},
            json={"user_id": user["id"], "currency": "EUR", "payment_token": "tok_visa",
                  "items": [{"sku": "a", "quantity": 1, "unit_price": 5}]},
        )  # fmt: skip
        await seams.client.post(
            "/api/users",
            headers={"Idempotency-Key": "signup"},
            json={"name": "Q", "email": "q@example.com", "password": "long enough"},
        )
        await seams.settle()
        users, payments = store_of(seams, "users"), store_of(seams, "payments")
        notifications = store_of(seams, "notifications")

        assert await seams.runtime.purge() == 0  # nothing is a week old yet
        assert await rows(payments, "inbox") > 0

        await asyncio.sleep(0.5)  # the idempotency keys' lifetime
        assert await seams.runtime.purge(retention_seconds=0) > 0

        assert await rows(users, "outbox") == 0
        assert await rows(users, "idempotency_keys") == 0
        assert await rows(payments, "outbox") == 0
        assert await rows(payments, "inbox") == 0
        assert await rows(notifications, "inbox") == 0
        # The state itself is never purged.
        assert await rows(users, "users") == 3  # with the driver's admin
        assert await rows(notifications, "notifications") == 1


async def test_an_undelivered_outbox_row_is_never_purged() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        users = store_of(seams, "users")
        async with users.transaction() as connection:
            await connection.execute(
                sa.text(
                    "INSERT INTO outbox (id, type, envelope, created_at, delivered_at, "
                    "aggregate_id) "
                    "VALUES ('x', 'UserRegistered', x'7b7d', '2000-01-01 00:00:00', NULL, 'u')"
                )
            )
        await seams.runtime.purge(retention_seconds=0)
        assert await rows(users, "outbox") == 1
        async with users.transaction() as connection:  # so the relay has nothing odd to send
            await connection.execute(sa.text("DELETE FROM outbox WHERE id = 'x'"))
