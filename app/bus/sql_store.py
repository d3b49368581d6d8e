"""A module's SQL store with the bookkeeping delivery needs: its outbox (if it publishes),
its inbox (if it consumes) and its idempotency keys (if it takes Idempotency-Key), in its
own database, and the unit of work that writes them with the effect in one transaction
(app/bus/unit_of_work.py, docs/decisions/0023-unit-of-work.md).

A module's store subclasses `SqlModuleStore` with its own tables; its writing methods take
the `SqlUnitOfWork` and execute through `work.connection`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.bus.bus import ModuleBus
from app.bus.envelope import Envelope
from app.bus.sql_outbox import SqlOutbox, add_to_outbox, claim_in_inbox, purge_handled
from app.bus.unit_of_work import UnitOfWork
from app.kernel.idempotency import IdempotentWrite, KeyTaken, StoredResponse
from app.kernel.ids import utcnow
from app.kernel.migrations import migrations_beside
from app.kernel.sql import Connection, SqlDatabase, UtcDateTime


def idempotency_table(metadata: sa.MetaData) -> sa.Table:
    """The responses to replay per Idempotency-Key (docs/decisions/0011-idempotency-keys.md)."""
    return sa.Table(
        "idempotency_keys",
        metadata,
        sa.Column("scope", sa.String(100), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=False),
    )


class _RollBack(Exception):
    """Ends a unit of work's transaction without writing (cancelled, or handled before)."""


class SqlUnitOfWork(UnitOfWork):
    """One transaction: write the effect through `connection`."""

    def __init__(
        self,
        bus: ModuleBus,
        cause: Envelope | None,
        connection: Connection,
        idempotency: sa.Table | None,
    ) -> None:
        super().__init__(bus, cause)
        self.connection = connection
        self._idempotency = idempotency

    async def remember(self, write: IdempotentWrite, created: Any) -> StoredResponse:
        """Store the response first: a request that wrote the same key first makes this
        one KeyTaken (the caller answers with that request's response), whatever else
        the two collide on."""
        if self._idempotency is None:
            raise RuntimeError("this store keeps no idempotency keys")
        response = await super().remember(write, created)
        try:
            await self.connection.execute(
                self._idempotency.insert().values(
                    scope=write.scope,
                    key=write.key,
                    fingerprint=response.fingerprint,
                    status=response.status,
                    body=response.body,
                    expires_at=response.expires_at,
                )
            )
        except IntegrityError as error:
            raise KeyTaken from error
        return response


class SqlModuleStore(SqlDatabase):
    """A module's database with its outbox, inbox and idempotency tables (any may be None)."""

    def __init__(
        self,
        url: str,
        metadata: sa.MetaData,
        *,
        outbox: sa.Table | None = None,
        inbox: sa.Table | None = None,
        idempotency: sa.Table | None = None,
    ) -> None:
        # Its migrations: app/modules/<module>/migrations/ (docs/decisions/0028-migrations.md).
        super().__init__(url, metadata, migrations_beside(type(self), metadata))
        self._outbox_table = outbox
        self._inbox = inbox
        self._idempotency = idempotency
        # The relay's view (Assembly.outbox); None for a module that publishes nothing.
        self.outbox = None if outbox is None else SqlOutbox(self, outbox)

    @asynccontextmanager
    async def unit_of_work(
        self, bus: ModuleBus, *, cause: Envelope | None = None
    ) -> AsyncIterator[SqlUnitOfWork]:
        """One transaction: the cause claimed in the inbox, the effect, the outbox rows and
        the idempotent response commit together; then the events go to the relay. A cause
        handled before sets `handled_before` and nothing is written."""
        work: SqlUnitOfWork | None = None
        try:
            async with self.transaction() as connection:
                work = SqlUnitOfWork(bus, cause, connection, self._idempotency)
                if cause is not None:
                    if self._inbox is None:
                        raise RuntimeError("this store keeps no inbox to claim events in")
                    work.handled_before = not await claim_in_inbox(connection, self._inbox, cause)
                yield work
                if work.handled_before or work.cancelled:
                    raise _RollBack
                if work.envelopes:
                    if self._outbox_table is None:
                        raise RuntimeError("this store keeps no outbox for the events it caused")
                    await add_to_outbox(connection, self._outbox_table, work.envelopes)
        except _RollBack:
            return
        work.finish()

    async def was_handled(self, envelope: Envelope) -> bool:
        """Whether an earlier unit of work claimed this event."""
        if self._inbox is None:
            return False
        query = sa.select(self._inbox.c.event_id).where(self._inbox.c.event_id == envelope.id)
        async with self.reading() as connection:
            return (await connection.execute(query)).first() is not None

    async def remembered(self, scope: str, key: str) -> StoredResponse | None:
        """The response stored for a key; an expired one is forgotten (the key is free)."""
        table = self._idempotency
        if table is None:
            return None
        where = (table.c.scope == scope, table.c.key == key)
        async with self.transaction() as connection:
            row = (await connection.execute(sa.select(table).where(*where))).mappings().first()
            if row is None:
                return None
            stored = StoredResponse(
                row["fingerprint"], row["status"], row["body"], row["expires_at"]
            )
            if stored.expired:
                await connection.execute(table.delete().where(*where))
                return None
            return stored

    async def purge(self, cutoff: datetime) -> dict[str, int]:
        """Delete delivered outbox rows and handled inbox ids older than the cutoff, and
        expired idempotency keys (docs/decisions/0010-delivery.md); how many of each went."""
        removed = await purge_handled(self, cutoff, outbox=self._outbox_table, inbox=self._inbox)
        if self._idempotency is not None:
            async with self.transaction() as connection:
                expired = await connection.execute(
                    self._idempotency.delete().where(self._idempotency.c.expires_at < utcnow())
                )
            removed["idempotency_keys"] = expired.rowcount
        return removed
