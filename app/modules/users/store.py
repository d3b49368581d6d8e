"""The users module's private SQL store: users and its outbox, in its own database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.bus.sql_outbox import outbox_table
from app.bus.sql_store import SqlModuleStore, SqlUnitOfWork, idempotency_table
from app.kernel.identity import Role
from app.kernel.sql import UtcDateTime
from app.modules.users.emails import EMAIL_KEY_LENGTH, email_key, legacy_email_key
from app.modules.users.user import User

metadata = sa.MetaData()

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("email", sa.String(254), nullable=False),
    sa.Column("email_key", sa.String(EMAIL_KEY_LENGTH), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(10), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("event_sequence", sa.Integer, nullable=False),
    # Bumped with every change of password, email or role: tokens carry the one they were
    # issued for, and the gateway refuses any other.
    sa.Column("token_generation", sa.Integer, nullable=False, server_default="1"),
)
outbox = outbox_table(metadata)
idempotency_keys = idempotency_table(metadata)


class Profile(msgspec.Struct, frozen=True):
    """What a user's record shows to a reader: never the password hash, nor the versions."""

    id: str
    name: str
    email: str
    created_at: datetime


class EmailTaken(Exception):
    pass


# Selected exactly as User's fields, so a row builds one: User(*row).
_columns = [users.c[name] for name in User.__struct_fields__]
# Built once, the key bound at execute time (app/kernel/sql.py `prepared`).
_by_id = sa.select(*_columns).where(users.c.id == sa.bindparam("b_key"))
_profile_by_id = sa.select(*(users.c[name] for name in Profile.__struct_fields__)).where(
    users.c.id == sa.bindparam("b_key")
)
# A row stored before `email_key` folded Unicode is found by the key it was stored under.
_by_email_keys = (
    sa.select(*_columns)
    .where(users.c.email_key.in_((sa.bindparam("b_key"), sa.bindparam("b_legacy_key"))))
    .order_by(users.c.email_key != sa.bindparam("b_key"))  # today's key first
    .limit(1)
)


_credentials_by_id = sa.select(users.c.token_generation, users.c.role).where(
    users.c.id == sa.bindparam("b_key")
)


class UsersStore(SqlModuleStore):
    def __init__(self, url: str) -> None:
        super().__init__(url, metadata, outbox=outbox, idempotency=idempotency_keys)

    async def open(self) -> None:
        await super().open()
        await self._add_token_generation()

    async def _add_token_generation(self) -> None:
        """A users table created before tokens had generations gains the column (every
        existing user at generation 1: their older tokens, which carry none, are refused)."""

        def missing(connection: sa.Connection) -> bool:
            columns = sa.inspect(connection).get_columns("users")
            return "token_generation" not in {column["name"] for column in columns}

        add = "ALTER TABLE users ADD COLUMN token_generation INTEGER NOT NULL DEFAULT 1"
        try:
            async with self.transaction() as connection:
                if await connection.run_sync(missing):
                    await connection.execute(sa.text(add))
        except sa.exc.DBAPIError:
            async with self.reading() as connection:  # a replica starting with us added it
                if await connection.run_sync(missing):
                    raise

    async def credentials(self, user_id: str) -> tuple[int, Role] | None:
        """A user's token generation and role, and nothing else: what the gateway checks."""
        async with self.reading() as connection:
            row = (await connection.execute(_credentials_by_id, {"b_key": user_id})).first()
        return None if row is None else (row[0], row[1])

    async def insert(self, work: SqlUnitOfWork, user: User) -> None:
        """A new user; EmailTaken if another user has the email (the whole work rolls back)."""
        try:
            await work.connection.execute(
                users.insert().values(
                    email_key=email_key(user.email), **msgspec.structs.asdict(user)
                )
            )
        except IntegrityError as error:
            raise EmailTaken(user.email) from error

    async def profile(self, user_id: str) -> Profile | None:
        """The readable part of a user's record: a read never loads the password hash."""
        async with self.reading() as connection:
            row = (await connection.execute(_profile_by_id, {"b_key": user_id})).first()
        return None if row is None else Profile(*row)

    async def get(self, user_id: str) -> User | None:
        return await self._one(_by_id, user_id)

    async def by_email(self, email: str) -> User | None:
        key = {"b_key": email_key(email), "b_legacy_key": legacy_email_key(email)}
        async with self.reading() as connection:
            row = (await connection.execute(_by_email_keys, key)).first()
        return None if row is None else User(*row)

    async def _one(self, statement: sa.Select[Any], key: str) -> User | None:
        async with self.reading() as connection:
            row = (await connection.execute(statement, {"b_key": key})).first()
        return None if row is None else User(*row)  # selected in User's field order

    async def page(self, *, after: str | None, limit: int) -> list[User]:
        rows = await self.fetch_page(sa.select(*_columns), users.c.id, after=after, limit=limit)
        return [User(**row) for row in rows]

    async def update(self, work: SqlUnitOfWork, user: User, *, expected_version: int) -> bool:
        """Write the new state only if nobody changed the user since `expected_version`;
        EmailTaken if another user has the new email."""
        values = {
            "name": user.name,
            "email": user.email,
            "email_key": email_key(user.email),
            "password_hash": user.password_hash,
            "role": user.role,
            "updated_at": user.updated_at,
            "version": user.version,
            "event_sequence": user.event_sequence,
            "token_generation": user.token_generation,
        }
        try:
            result = await work.connection.execute(
                users.update()
                .where(users.c.id == user.id, users.c.version == expected_version)
                .values(**values)
            )
        except IntegrityError as error:
            raise EmailTaken(user.email) from error
        return bool(result.rowcount == 1)
