"""The notifications module's private SQL store: contacts, notifications and its inbox.

Contacts are a replica of what the users module announced. Every event is handled in one
unit of work that claims the envelope in the inbox and writes its effect, so a redelivery
finds the claim and changes nothing, and a failure undoes both.
"""

from __future__ import annotations

import msgspec
import sqlalchemy as sa

from app.bus.sql_outbox import inbox_table
from app.bus.sql_store import SqlModuleStore, SqlUnitOfWork
from app.kernel.sql import UtcDateTime, dialect_insert, prepared
from app.modules.notifications.notification import (
    ERASED,
    Contact,
    Notification,
    NotificationKind,
)

metadata = sa.MetaData()

contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("user_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("sequence", sa.Integer, nullable=False),
)
notifications = sa.Table(
    "notifications",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("order_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("to", sa.String(254), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("order_id", "kind", name="uq_notifications_order_kind"),
    sa.Index("ix_notifications_user", "user_id", "id"),
    sa.Index("ix_notifications_order", "order_id", "id"),
)
inbox = inbox_table(metadata)


_columns = [notifications.c[name] for name in Notification.__struct_fields__]


def _notification(row: sa.RowMapping) -> Notification:
    return Notification(**{**row, "kind": NotificationKind(row["kind"])})


# Built once, values bound at execute time (app/kernel/sql.py `prepared`).
_contact = sa.select(contacts.c.user_id, contacts.c.name, contacts.c.email).where(
    contacts.c.user_id == sa.bindparam("b_user_id")
)


def _build_keep_contact(dialect: str) -> sa.Executable:
    statement = dialect_insert(dialect, contacts)
    return statement.on_conflict_do_update(
        index_elements=[contacts.c.user_id],
        set_={
            "name": statement.excluded.name,
            "email": statement.excluded.email,
            "sequence": statement.excluded.sequence,
        },
        where=contacts.c.sequence < statement.excluded.sequence,
    )


_keep_contact = prepared(_build_keep_contact)
_add_notification = prepared(
    lambda dialect: dialect_insert(dialect, notifications).on_conflict_do_nothing(
        index_elements=[notifications.c.order_id, notifications.c.kind]
    )
)


class NotificationsStore(SqlModuleStore):
    """Its writing methods run inside the unit of work that claimed the event they handle."""

    def __init__(self, url: str) -> None:
        super().__init__(url, metadata, inbox=inbox)

    async def contact(self, work: SqlUnitOfWork, user_id: str) -> Contact | None:
        result = await work.connection.execute(_contact, {"b_user_id": user_id})
        row = result.mappings().first()
        return None if row is None else Contact(**row)

    async def keep_contact(self, work: SqlUnitOfWork, contact: Contact, *, sequence: int) -> None:
        """Upsert the contact unless a newer event about this user (higher sequence) was kept."""
        await work.connection.execute(
            _keep_contact(work.connection),
            {"sequence": sequence, **msgspec.structs.asdict(contact)},
        )

    async def erase_user(self, work: SqlUnitOfWork, user_id: str, *, sequence: int) -> None:
        """Keep nothing personal of a deleted user: the contact erased (kept as a marker at
        the deletion's sequence) and the address and words of what they were sent; which
        order was told what, and when, stays."""
        await self.keep_contact(work, Contact.erased(user_id), sequence=sequence)
        await work.connection.execute(
            notifications.update()
            .where(notifications.c.user_id == user_id)
            .values(to=ERASED, body=ERASED)
        )

    async def add_notification(self, work: SqlUnitOfWork, notification: Notification) -> bool:
        """Insert it; False when this order already has a notification of this kind."""
        row = msgspec.structs.asdict(notification)
        row["kind"] = notification.kind.value
        result = await work.connection.execute(_add_notification(work.connection), row)
        return result.rowcount == 1

    async def contacts_page(
        self, *, user_id: str | None, after: str | None, limit: int
    ) -> list[Contact]:
        """The contact details kept (a deleted user's: the erased marker), by user id."""
        rows = await self.fetch_page(
            sa.select(contacts.c.user_id, contacts.c.name, contacts.c.email),
            contacts.c.user_id,
            after=after,
            limit=limit,
            where=[(contacts.c.user_id, user_id)],
        )
        return [Contact(**row) for row in rows]

    async def get(self, notification_id: str) -> Notification | None:
        statement = sa.select(*_columns).where(notifications.c.id == notification_id)
        async with self.reading() as connection:
            row = (await connection.execute(statement)).mappings().first()
        return None if row is None else _notification(row)

    async def page(
        self, *, user_id: str | None, order_id: str | None, after: str | None, limit: int
    ) -> list[Notification]:
        rows = await self.fetch_page(
            sa.select(*_columns),
            notifications.c.id,
            after=after,
            limit=limit,
            where=[(notifications.c.user_id, user_id), (notifications.c.order_id, order_id)],
        )
        return [_notification(row) for row in rows]
