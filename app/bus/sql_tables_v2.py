"""The outbox's `aggregate_id` column and its index, as the revision after release 8e8cbb7's
of every module with an outbox adds them (users 0003, payments 0002), filling the column of
the rows already there from their envelopes (docs/decisions/0039-outbox-aggregate-column.md).

Frozen, like app/bus/sql_tables_v1.py: those revisions must make the same change forever. It
reads an envelope's aggregate_id with a struct of its own, never the live Envelope.
"""

from __future__ import annotations

import msgspec
import sqlalchemy as sa
from alembic import op

COLUMN = "aggregate_id"
INDEX = "ix_outbox_aggregate"
LENGTH = 200
BATCH = 1000  # rows read, decoded and written at a time: memory stays flat on a long outbox


class _Aggregate(msgspec.Struct):
    aggregate_id: str


_decoder = msgspec.json.Decoder(_Aggregate)
_outbox = sa.table(
    "outbox",
    sa.column("position", sa.BigInteger()),
    sa.column("envelope", sa.LargeBinary()),
    sa.column(COLUMN, sa.String(LENGTH)),
)


def add_outbox_aggregate_id() -> None:
    """The column, filled, then NOT NULL and indexed: a store upgraded holds what a new one
    would (SQLite copies the table to make the column NOT NULL)."""
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column(COLUMN, sa.String(LENGTH), nullable=True))
    fill_aggregate_ids(op.get_bind(), BATCH)
    with op.batch_alter_table("outbox") as batch:
        batch.alter_column(COLUMN, existing_type=sa.String(LENGTH), nullable=False)
        batch.create_index(INDEX, [COLUMN])


def fill_aggregate_ids(connection: sa.Connection, batch: int) -> int:
    """Each row's aggregate_id from its envelope, `batch` rows at a time in position order
    (inside the migration's one transaction); how many rows were filled."""
    page = (
        sa.select(_outbox.c.position, _outbox.c.envelope)
        .where(_outbox.c.position > sa.bindparam("b_after"))
        .order_by(_outbox.c.position)
        .limit(batch)
    )
    fill = (
        _outbox.update()
        .where(_outbox.c.position == sa.bindparam("b_position"))
        .values({COLUMN: sa.bindparam("b_aggregate")})
    )
    after, filled = -1, 0
    while rows := connection.execute(page, {"b_after": after}).all():
        values = [
            {"b_position": position, "b_aggregate": _aggregate_of(position, envelope)}
            for position, envelope in rows
        ]
        connection.execute(fill, values)
        after, filled = rows[-1][0], filled + len(rows)
    return filled


def _aggregate_of(position: int, envelope: bytes) -> str:
    try:
        return _decoder.decode(envelope).aggregate_id
    except msgspec.DecodeError as error:  # the relay could not have sent it either
        raise RuntimeError(
            f"outbox row {position} holds no envelope with an aggregate_id ({error}): "
            "this store's outbox was written by something other than Seams"
        ) from error


def drop_outbox_aggregate_id() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_index(INDEX)
        batch.drop_column(COLUMN)
