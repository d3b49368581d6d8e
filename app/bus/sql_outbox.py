"""Outbox and inbox tables for a module whose store is SQL, and the relay's view of them.

Each module calls these with its own tables in its own database: the state change, the
envelopes it causes and the ids it handled are written in one transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa

from app.bus.envelope import Envelope, decode, encode
from app.kernel.ids import utcnow
from app.kernel.sql import Connection, SqlDatabase, UtcDateTime, dialect_insert, prepared

AGGREGATE_ID_LENGTH = 200  # as the bus store's dead letters and parked events keep it


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "outbox",
        metadata,
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("id", sa.String(36), nullable=False, unique=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("envelope", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("delivered_at", UtcDateTime(), nullable=True),
        # The envelope's aggregate, so the rows about one aggregate are found by an index, not
        # by decoding every envelope (docs/decisions/0039-outbox-aggregate-column.md).
        sa.Column("aggregate_id", sa.String(AGGREGATE_ID_LENGTH), nullable=False),
        sa.Index("ix_outbox_undelivered", "delivered_at", "position"),
        sa.Index("ix_outbox_aggregate", "aggregate_id"),
    )


def inbox_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        "inbox",
        metadata,
        sa.Column("event_id", sa.String(36), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("handled_at", UtcDateTime(), nullable=False),
    )


@functools.cache
def _insert_into(table: sa.Table) -> sa.Insert:
    return table.insert()


@functools.cache
def _claim(inbox: sa.Table) -> Callable[[Connection], sa.Executable]:
    return prepared(
        lambda dialect: dialect_insert(dialect, inbox).on_conflict_do_nothing(
            index_elements=["event_id"]
        )
    )


@functools.cache
def _mark_delivered(outbox: sa.Table) -> sa.Update:
    return (
        outbox.update()
        .where(outbox.c.id.in_(sa.bindparam("ids", expanding=True)))
        .values(delivered_at=sa.bindparam("at"))
    )


async def add_to_outbox(
    connection: Connection, outbox: sa.Table, envelopes: Sequence[Envelope]
) -> None:
    if not envelopes:
        return
    now = utcnow()
    await connection.execute(
        _insert_into(outbox),
        [
            {
                "id": e.id,
                "type": e.type,
                "envelope": encode(e),
                "created_at": now,
                "aggregate_id": e.aggregate_id,
            }
            for e in envelopes
        ],
    )


@functools.cache
def _delete_delivered_of(outbox: sa.Table) -> sa.Delete:
    return outbox.delete().where(
        outbox.c.aggregate_id == sa.bindparam("b_aggregate"), outbox.c.delivered_at.is_not(None)
    )


async def delete_delivered_of(connection: Connection, outbox: sa.Table, aggregate_id: str) -> int:
    """Delete the delivered rows about one aggregate (a user erased: their envelopes need not
    wait for the retention purge) through its index; how many went. Undelivered rows stay to
    go out."""
    result = await connection.execute(_delete_delivered_of(outbox), {"b_aggregate": aggregate_id})
    return result.rowcount


async def claim_in_inbox(connection: Connection, inbox: sa.Table, envelope: Envelope) -> bool:
    """Record the envelope as handled in this transaction. False: it was handled before,
    so the caller must do nothing."""
    result = await connection.execute(
        _claim(inbox)(connection),
        {"event_id": envelope.id, "type": envelope.type, "handled_at": utcnow()},
    )
    return result.rowcount == 1


class SqlOutbox:
    """The relay's view of one module's outbox table."""

    def __init__(self, database: SqlDatabase, outbox: sa.Table) -> None:
        self._database = database
        self._outbox = outbox

    async def pending(self, limit: int) -> list[Envelope]:
        statement = (
            sa.select(self._outbox.c.envelope)
            .where(self._outbox.c.delivered_at.is_(None))
            .order_by(self._outbox.c.position)
            .limit(limit)
        )
        async with self._database.reading() as connection:
            rows = (await connection.execute(statement)).scalars().all()
        return [decode(row) for row in rows]

    async def mark_delivered(self, envelopes: Sequence[Envelope]) -> None:
        async with self._database.transaction() as connection:
            await connection.execute(
                _mark_delivered(self._outbox), {"ids": [e.id for e in envelopes], "at": utcnow()}
            )


async def purge_handled(
    database: SqlDatabase,
    cutoff: datetime,
    *,
    outbox: sa.Table | None = None,
    inbox: sa.Table | None = None,
) -> dict[str, int]:
    """Delete outbox rows delivered and inbox ids handled before the cutoff
    (docs/decisions/0010-delivery.md); returns how many of each kind went.

    An inbox id older than the retention can no longer stop a redelivery, so the retention
    must be longer than any redelivery can take (days, not seconds)."""
    removed: dict[str, int] = {}
    async with database.transaction() as connection:
        if outbox is not None:
            result = await connection.execute(outbox.delete().where(outbox.c.delivered_at < cutoff))
            removed["outbox"] = result.rowcount
        if inbox is not None:
            result = await connection.execute(inbox.delete().where(inbox.c.handled_at < cutoff))
            removed["inbox"] = result.rowcount
    return removed
