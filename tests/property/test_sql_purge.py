"""A SQL module store's purge (app/bus/sql_store.py, docs/decisions/0035-retention.md), on
random rows: it never removes an outbox row not delivered, nor one delivered, an inbox id
handled or a key expiring at or after the cutoff; it removes every older one, and says how
many of each kind went."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.bus.sql_outbox import inbox_table, outbox_table
from app.bus.sql_store import SqlModuleStore, idempotency_table
from app.kernel.ids import utcnow

metadata = sa.MetaData()
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
keys = idempotency_table(metadata)

offsets = st.integers(-3_000, 3_000)  # ms from the cutoff (from now, for a key's expiry)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    delivered=st.lists(st.one_of(st.none(), offsets), max_size=10),
    handled=st.lists(offsets, max_size=10),
    expiring=st.lists(offsets, max_size=10),
)
def test_purge_removes_exactly_what_is_older_than_its_bound(
    delivered: list[int | None], handled: list[int], expiring: list[int]
) -> None:
    asyncio.run(_check(delivered, handled, expiring))


async def _check(delivered: list[int | None], handled: list[int], expiring: list[int]) -> None:
    store = SqlModuleStore(
        "sqlite:///:memory:", metadata, outbox=outbox, inbox=inbox, idempotency=keys
    )
    await store.open()
    now = utcnow()
    cutoff = now - timedelta(days=7)

    def at(base: datetime, ms: int) -> datetime:
        return base + timedelta(milliseconds=ms)

    try:
        async with store.transaction() as connection:
            for n, ms in enumerate(delivered):
                await connection.execute(
                    outbox.insert().values(
                        id=f"o{n}", type="T", envelope=b"{}", created_at=cutoff, aggregate_id="a",
                        delivered_at=None if ms is None else at(cutoff, ms),
                    )
                )  # fmt: skip
            for n, ms in enumerate(handled):
                await connection.execute(
                    inbox.insert().values(event_id=f"i{n}", type="T", handled_at=at(cutoff, ms))
                )
            for n, ms in enumerate(expiring):
                await connection.execute(
                    keys.insert().values(
                        scope="s", key=f"k{n}", fingerprint="f", status=201, body=b"",
                        expires_at=at(now, ms),
                    )
                )  # fmt: skip
        purge_started = utcnow()
        removed = await store.purge(cutoff)

        async with store.reading() as connection:
            outbox_left = set((await connection.execute(sa.select(outbox.c.id))).scalars())
            inbox_left = set((await connection.execute(sa.select(inbox.c.event_id))).scalars())
            keys_left = set((await connection.execute(sa.select(keys.c.key))).scalars())
        assert outbox_left == {f"o{n}" for n, ms in enumerate(delivered) if ms is None or ms >= 0}
        assert inbox_left == {f"i{n}" for n, ms in enumerate(handled) if ms >= 0}
        # A key goes once expired by the purge's own clock, a moment after `now`.
        for n, ms in enumerate(expiring):
            if at(now, ms) >= utcnow():
                assert f"k{n}" in keys_left
            if at(now, ms) < purge_started:
                assert f"k{n}" not in keys_left
        assert removed == {
            "outbox": len(delivered) - len(outbox_left),
            "inbox": len(handled) - len(inbox_left),
            "idempotency_keys": len(expiring) - len(keys_left),
        }
    finally:
        await store.close()
