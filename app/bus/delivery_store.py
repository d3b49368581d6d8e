"""What the bus must remember across a restart: handler attempts, dead letters, and the
events parked behind a dead letter of the same aggregate (docs/decisions/0010-delivery.md).

Only failures write here: a handler that succeeds at the first attempt costs nothing.
Its schema has a version in `schema_version` and upgrade steps
(docs/decisions/0028-migrations.md).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from app.bus.envelope import Envelope, decode, encode
from app.kernel.ids import new_id, utcnow
from app.kernel.migrations import SqlSteps
from app.kernel.sql import Connection, SqlDatabase, UtcDateTime, insert

metadata = sa.MetaData()

dead_letters = sa.Table(
    "dead_letters",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("consumer", sa.String(100), nullable=False),
    sa.Column("aggregate_id", sa.String(200), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("event_type", sa.String(200), nullable=False),
    sa.Column("envelope", sa.LargeBinary(), nullable=False),
    sa.Column("error", sa.Text(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("failed_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("consumer", "event_id"),
)

parked = sa.Table(
    "parked",
    metadata,
    sa.Column("consumer", sa.String(100), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("aggregate_id", sa.String(200), nullable=False),
    sa.Column("sequence", sa.BigInteger(), nullable=False),
    sa.Column("envelope", sa.LargeBinary(), nullable=False),
    sa.Column("parked_at", UtcDateTime(), nullable=False),
    sa.Index("ix_parked_aggregate", "consumer", "aggregate_id", "sequence"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("consumer", sa.String(100), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("last_error", sa.Text(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    consumer: str
    envelope: Envelope
    error: str
    attempts: int
    failed_at: str


@dataclass(frozen=True)
class Remembered:
    """What a consumer needs back on start."""

    attempts: dict[tuple[str, str], int]  # (consumer, event id) -> attempts made
    blocked: set[tuple[str, str]]  # (consumer, aggregate) with a dead letter
    parked: set[tuple[str, str]]  # (consumer, aggregate) with parked events


@dataclass(frozen=True)
class Purged:
    """What a purge of the bus store deleted (docs/decisions/0035-retention.md)."""

    dead_letters: list[DeadLetter] = field(default_factory=list)
    parked: int = 0
    attempts: int = 0

    @property
    def counts(self) -> dict[str, int]:
        return {
            "dead_letters": len(self.dead_letters),
            "parked": self.parked,
            "attempts": self.attempts,
        }


def _letter(row: sa.RowMapping) -> DeadLetter:
    return DeadLetter(
        id=row["id"],
        consumer=row["consumer"],
        envelope=decode(row["envelope"]),
        error=row["error"],
        attempts=row["attempts"],
        failed_at=row["failed_at"].isoformat().replace("+00:00", "Z"),
    )


async def _find(connection: Connection, letter_id: str) -> DeadLetter | None:
    statement = sa.select(dead_letters).where(dead_letters.c.id == letter_id)
    row = (await connection.execute(statement)).mappings().first()
    return None if row is None else _letter(row)


# Version 1: the tables above as release 8e8cbb7 made them. A change to them is a new step,
# version N to N+1 (a function of a SQLAlchemy connection); an empty store is created from
# the tables as declared, the head.
SCHEMA_STEPS = SqlSteps("bus", metadata, steps=())


class DeliveryStore(SqlDatabase):
    def __init__(self, url: str) -> None:
        super().__init__(url, metadata, SCHEMA_STEPS)

    async def remembered(self) -> Remembered:
        async with self.reading() as connection:
            tried = await connection.execute(
                sa.select(attempts.c.consumer, attempts.c.event_id, attempts.c.attempts)
            )
            blocked = await connection.execute(
                sa.select(dead_letters.c.consumer, dead_letters.c.aggregate_id)
            )
            waiting = await connection.execute(
                sa.select(parked.c.consumer, parked.c.aggregate_id).distinct()
            )
            return Remembered(
                attempts={(c, e): n for c, e, n in tried},
                blocked={(c, a) for c, a in blocked},
                parked={(c, a) for c, a in waiting},
            )

    async def record_failure(
        self, consumer: str, envelope: Envelope, tries: int, error: str
    ) -> None:
        async with self.transaction() as connection:
            values = {"attempts": tries, "last_error": error, "updated_at": utcnow()}
            await connection.execute(
                insert(connection, attempts)
                .values(consumer=consumer, event_id=envelope.id, **values)
                .on_conflict_do_update(index_elements=["consumer", "event_id"], set_=values)
            )

    async def forget_attempts(self, consumer: str, envelope: Envelope) -> None:
        async with self.transaction() as connection:
            await connection.execute(
                attempts.delete().where(
                    attempts.c.consumer == consumer, attempts.c.event_id == envelope.id
                )
            )

    async def add_dead_letter(
        self, consumer: str, envelope: Envelope, error: str, tries: int
    ) -> DeadLetter:
        letter = DeadLetter(
            id=new_id(),
            consumer=consumer,
            envelope=envelope,
            error=error,
            attempts=tries,
            failed_at=utcnow().isoformat().replace("+00:00", "Z"),
        )
        async with self.transaction() as connection:
            values = {
                "id": letter.id,
                "aggregate_id": envelope.aggregate_id,
                "event_type": envelope.type,
                "envelope": encode(envelope),
                "error": error,
                "attempts": tries,
                "failed_at": utcnow(),
            }
            await connection.execute(
                insert(connection, dead_letters)
                .values(consumer=consumer, event_id=envelope.id, **values)
                .on_conflict_do_update(index_elements=["consumer", "event_id"], set_=values)
            )
            await connection.execute(
                attempts.delete().where(
                    attempts.c.consumer == consumer, attempts.c.event_id == envelope.id
                )
            )
        return letter

    async def park(self, consumer: str, envelope: Envelope) -> None:
        async with self.transaction() as connection:
            await self._park(connection, consumer, envelope)

    async def _park(self, connection: Connection, consumer: str, envelope: Envelope) -> None:
        await connection.execute(
            insert(connection, parked)
            .values(
                consumer=consumer,
                event_id=envelope.id,
                aggregate_id=envelope.aggregate_id,
                sequence=envelope.sequence,
                envelope=encode(envelope),
                parked_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["consumer", "event_id"])
        )

    async def parked_for(self, consumer: str, aggregate_id: str) -> list[Envelope]:
        async with self.reading() as connection:
            rows = await connection.execute(
                sa.select(parked.c.envelope)
                .where(parked.c.consumer == consumer, parked.c.aggregate_id == aggregate_id)
                .order_by(parked.c.sequence, parked.c.parked_at)
            )
            return [decode(row) for row in rows.scalars()]

    async def unpark(self, consumer: str, envelope: Envelope) -> None:
        async with self.transaction() as connection:
            await connection.execute(
                parked.delete().where(
                    parked.c.consumer == consumer, parked.c.event_id == envelope.id
                )
            )

    async def release(self, letter_id: str, *, replay: bool) -> DeadLetter | None:
        """Remove a dead letter; to replay it, put its envelope first in line (by sequence)
        among the events parked behind it, in the same transaction."""
        async with self.transaction() as connection:
            letter = await _find(connection, letter_id)
            if letter is None:
                return None
            if replay:
                await self._park(connection, letter.consumer, letter.envelope)
            await connection.execute(dead_letters.delete().where(dead_letters.c.id == letter_id))
        return letter

    async def dead_letter(self, letter_id: str) -> DeadLetter | None:
        async with self.reading() as connection:
            return await _find(connection, letter_id)

    async def dead_letters(self, *, after: str | None, limit: int) -> list[DeadLetter]:
        statement = sa.select(dead_letters)
        rows = await self.fetch_page(statement, dead_letters.c.id, after=after, limit=limit)
        return [_letter(row) for row in rows]

    async def count_dead_letters(self) -> int:
        async with self.reading() as connection:
            found = await connection.execute(sa.select(sa.func.count()).select_from(dead_letters))
            return int(found.scalar_one())

    async def purge(self, cutoff: datetime, consumers: Collection[str]) -> Purged:
        """Delete, for these consumers only (processes may share this store), the dead
        letters that failed before the cutoff, the attempts not updated since, and the
        events parked before it behind a letter purged here, in a lane with no dead letter
        left: an older event parked behind a younger letter (a replay that failed again)
        waits for the operator, and an event parked for a newer version than its consumer
        reads (no letter: nothing failed) waits for the upgrade, however old
        (docs/decisions/0027-tolerant-readers.md, 0035-retention.md)."""
        mine = list(consumers)
        async with self.transaction() as connection:
            rows = await connection.execute(
                sa.select(dead_letters).where(
                    dead_letters.c.failed_at < cutoff, dead_letters.c.consumer.in_(mine)
                )
            )
            letters = [_letter(row) for row in rows.mappings()]
            await connection.execute(
                dead_letters.delete().where(dead_letters.c.id.in_([x.id for x in letters]))
            )
            lane_blocked = sa.exists().where(
                dead_letters.c.consumer == parked.c.consumer,
                dead_letters.c.aggregate_id == parked.c.aggregate_id,
            )
            lanes = {(letter.consumer, letter.envelope.aggregate_id) for letter in letters}
            gone_parked = await connection.execute(
                parked.delete().where(
                    parked.c.parked_at < cutoff,
                    sa.tuple_(parked.c.consumer, parked.c.aggregate_id).in_(lanes),
                    ~lane_blocked,
                )
            )
            gone_attempts = await connection.execute(
                attempts.delete().where(
                    attempts.c.updated_at < cutoff, attempts.c.consumer.in_(mine)
                )
            )
        return Purged(letters, gone_parked.rowcount, gone_attempts.rowcount)

    async def blocked_lanes(self, consumer: str, aggregate_ids: Collection[str]) -> set[str]:
        """Which of these aggregates still have a dead letter for the consumer."""
        async with self.reading() as connection:
            rows = await connection.execute(
                sa.select(dead_letters.c.aggregate_id).where(
                    dead_letters.c.consumer == consumer,
                    dead_letters.c.aggregate_id.in_(list(aggregate_ids)),
                )
            )
            return set(rows.scalars())
