"""The payments module's private SQL store: payments, the simulated processor's ledger,
its outbox and its inbox, in its own database (never the users database)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa

from app.bus.sql_outbox import inbox_table, outbox_table
from app.bus.sql_store import SqlModuleStore, SqlUnitOfWork
from app.kernel.sql import Connection, UtcDateTime, dialect_insert, prepared
from app.modules.payments.payment import Payment, PaymentStatus
from app.modules.payments.processor import ChargeResult, Outcome

metadata = sa.MetaData()

payments = sa.Table(
    "payments",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("order_id", sa.String(64), nullable=False, unique=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("token", sa.String(100), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("failure_reason", sa.String(200), nullable=True),
    sa.Column("event_sequence", sa.Integer, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Index("ix_payments_status", "status"),
)

# The simulated processor's own books: what it captured and refunded, per order.
processor_ledger = sa.Table(
    "processor_ledger",
    metadata,
    sa.Column("order_id", sa.String(64), primary_key=True),
    sa.Column("amount", sa.BigInteger, nullable=False),
    sa.Column("currency", sa.String(3), nullable=False),
    sa.Column("token", sa.String(100), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("outcome", sa.String(20), nullable=True),
    sa.Column("reason", sa.String(100), nullable=True),
    sa.Column("refunded", sa.Boolean, nullable=False, default=False),
)
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)


_columns = [payments.c[name] for name in Payment.__struct_fields__]

# Built once, values bound at execute time (app/kernel/sql.py `prepared`).
_open_payment = prepared(
    lambda dialect: dialect_insert(dialect, payments).on_conflict_do_nothing(
        index_elements=["order_id"]
    )
)
_transition = (
    payments.update()
    .where(payments.c.id == sa.bindparam("b_id"), payments.c.status == sa.bindparam("b_expected"))
    .values(
        {
            name: sa.bindparam(f"b_{name}")
            for name in ("status", "attempts", "failure_reason", "event_sequence", "updated_at")
        }
    )
)
_by_id = sa.select(*_columns).where(payments.c.id == sa.bindparam("b_key"))
_by_order = sa.select(*_columns).where(payments.c.order_id == sa.bindparam("b_key"))


def _build_count_attempt(dialect: str) -> sa.Executable:
    """One more authorisation attempt for an order; the first one creates its ledger line."""
    return (
        dialect_insert(dialect, processor_ledger)
        .values(
            order_id=sa.bindparam("b_order_id"),
            amount=sa.bindparam("b_amount"),
            currency=sa.bindparam("b_currency"),
            token=sa.bindparam("b_token"),
            attempts=1,
            refunded=False,
        )
        .on_conflict_do_update(
            index_elements=["order_id"], set_={"attempts": processor_ledger.c.attempts + 1}
        )
        .returning(
            processor_ledger.c.attempts, processor_ledger.c.outcome, processor_ledger.c.reason
        )
    )


_count_attempt = prepared(_build_count_attempt)
_settle_charge = (
    processor_ledger.update()
    .where(
        processor_ledger.c.order_id == sa.bindparam("b_order_id"),
        processor_ledger.c.outcome.is_(None),
    )
    .values(outcome=sa.bindparam("b_outcome"), reason=sa.bindparam("b_reason"))
)
# Only an authorisation nobody voided is captured.
_capture_charge = (
    processor_ledger.update()
    .where(
        processor_ledger.c.order_id == sa.bindparam("b_order_id"),
        processor_ledger.c.outcome == Outcome.AUTHORISED.value,
    )
    .values(outcome=Outcome.CAPTURED.value)
)


def _build_void_charge(dialect: str) -> sa.Executable:
    """Settle as voided: a new line for an order never charged, or a line not answered
    yet, or an authorisation not captured yet."""
    statement = dialect_insert(dialect, processor_ledger).values(
        order_id=sa.bindparam("b_order_id"),
        amount=0,
        currency="",
        token="",
        attempts=0,
        outcome=Outcome.VOIDED.value,
        reason="order_cancelled",
        refunded=False,
    )
    return statement.on_conflict_do_update(
        index_elements=["order_id"],
        set_={"outcome": statement.excluded.outcome, "reason": statement.excluded.reason},
        where=sa.or_(
            processor_ledger.c.outcome.is_(None),
            processor_ledger.c.outcome == Outcome.AUTHORISED.value,
        ),
    )


_void_charge = prepared(_build_void_charge)
_settled_charge = sa.select(processor_ledger.c.outcome, processor_ledger.c.reason).where(
    processor_ledger.c.order_id == sa.bindparam("b_order_id")
)


def _row(payment: Payment) -> dict[str, Any]:
    """The payment as the payments table's columns."""
    row = msgspec.structs.asdict(payment)
    row["status"] = payment.status.value
    return row


def _payment(row: sa.RowMapping) -> Payment:
    """A payment from a row selected as `_columns`."""
    return Payment(**{**row, "status": PaymentStatus(row["status"])})


async def _settled(connection: Connection, order_id: str) -> ChargeResult:
    row = (await connection.execute(_settled_charge, {"b_order_id": order_id})).one()
    return ChargeResult(Outcome(row.outcome), row.reason)


class PaymentsStore(SqlModuleStore):
    def __init__(self, url: str) -> None:
        super().__init__(url, metadata, outbox=outbox, inbox=inbox)

    async def open_payment(self, work: SqlUnitOfWork, payment: Payment) -> bool:
        """Create the payment for an order, once: False if the order has one already."""
        result = await work.connection.execute(_open_payment(work.connection), _row(payment))
        return bool(result.rowcount == 1)

    async def transition(
        self, work: SqlUnitOfWork, payment: Payment, *, expected_status: PaymentStatus
    ) -> bool:
        """Write the payment's new state, only from `expected_status`: False, and nothing
        written, if it moved on since it was read."""
        result = await work.connection.execute(
            _transition,
            {
                "b_id": payment.id,
                "b_expected": expected_status.value,
                "b_status": payment.status.value,
                "b_attempts": payment.attempts,
                "b_failure_reason": payment.failure_reason,
                "b_event_sequence": payment.event_sequence,
                "b_updated_at": payment.updated_at,
            },
        )
        return bool(result.rowcount == 1)

    async def by_id(self, payment_id: str) -> Payment | None:
        return await self._one(_by_id, payment_id)

    async def by_order(self, order_id: str) -> Payment | None:
        return await self._one(_by_order, order_id)

    async def _one(self, statement: sa.Select[Any], key: str) -> Payment | None:
        async with self.reading() as connection:
            row = (await connection.execute(statement, {"b_key": key})).mappings().first()
        return None if row is None else _payment(row)

    async def page(
        self, *, order_id: str | None, user_id: str | None, after: str | None, limit: int
    ) -> list[Payment]:
        rows = await self.fetch_page(
            sa.select(*_columns),
            payments.c.id,
            after=after,
            limit=limit,
            where=[(payments.c.user_id, user_id), (payments.c.order_id, order_id)],
        )
        return [_payment(row) for row in rows]

    async def processing_orders(self, *, untouched_since: datetime | None = None) -> list[str]:
        """Orders whose payment is PROCESSING; with `untouched_since`, only those whose
        payment was not written since then."""
        query = sa.select(payments.c.order_id).where(
            payments.c.status == PaymentStatus.PROCESSING.value
        )
        if untouched_since is not None:
            query = query.where(payments.c.updated_at < untouched_since)
        async with self.reading() as connection:
            rows = await connection.execute(query)
            return list(rows.scalars().all())

    # The processor's ledger (the Ledger protocol of processor.py).

    async def count_attempt(
        self, order_id: str, amount: int, currency: str, token: str
    ) -> tuple[int, ChargeResult | None]:
        async with self.transaction() as connection:
            result = await connection.execute(
                _count_attempt(connection),
                {
                    "b_order_id": order_id,
                    "b_amount": amount,
                    "b_currency": currency,
                    "b_token": token,
                },
            )
            attempts, outcome, reason = result.one()
        settled = None if outcome is None else ChargeResult(Outcome(outcome), reason)
        return int(attempts), settled

    async def settle_charge(self, order_id: str, result: ChargeResult) -> ChargeResult:
        async with self.transaction() as connection:
            await connection.execute(
                _settle_charge,
                {
                    "b_order_id": order_id,
                    "b_outcome": result.outcome.value,
                    "b_reason": result.reason,
                },
            )
            return await _settled(connection, order_id)

    async def void_charge(self, order_id: str) -> ChargeResult:
        async with self.transaction() as connection:
            await connection.execute(_void_charge(connection), {"b_order_id": order_id})
            return await _settled(connection, order_id)

    async def capture_charge(self, order_id: str) -> ChargeResult:
        async with self.transaction() as connection:
            await connection.execute(_capture_charge, {"b_order_id": order_id})
            return await _settled(connection, order_id)

    async def refund_charge(self, order_id: str) -> bool:
        async with self.transaction() as connection:
            result = await connection.execute(
                processor_ledger.update()
                .where(
                    processor_ledger.c.order_id == order_id,
                    processor_ledger.c.outcome == Outcome.CAPTURED.value,
                )
                .values(refunded=True)
            )
            return bool(result.rowcount == 1)

    async def ledger_entry(self, order_id: str) -> tuple[str | None, bool] | None:
        """The processor's (outcome, refunded) for one order, if it has a line for it."""
        async with self.reading() as connection:
            row = (
                await connection.execute(
                    sa.select(processor_ledger.c.outcome, processor_ledger.c.refunded).where(
                        processor_ledger.c.order_id == order_id
                    )
                )
            ).first()
        return None if row is None else (row.outcome, bool(row.refunded))

    async def ledger_totals(self) -> tuple[int, int]:
        """(captured, refunded) in minor units across all orders: what the processor holds."""
        async with self.reading() as connection:
            captured = sa.func.coalesce(sa.func.sum(processor_ledger.c.amount), 0)
            rows = await connection.execute(
                sa.select(
                    sa.select(captured)
                    .where(processor_ledger.c.outcome == "captured")
                    .scalar_subquery(),
                    sa.select(captured)
                    .where(processor_ledger.c.refunded.is_(True))
                    .scalar_subquery(),
                )
            )
            total_captured, total_refunded = rows.one()
        return int(total_captured), int(total_refunded)
