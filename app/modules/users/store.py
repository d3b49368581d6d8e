"""The users module's private SQL store: users, their keys, its outbox and idempotency keys,
in its own database. The keys table is read by this module alone
(docs/decisions/0030-crypto-shredding.md; tests/architecture/test_user_keys.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from app.bus.sql_outbox import delete_delivered_of, outbox_table
from app.bus.sql_store import SqlModuleStore, SqlUnitOfWork, idempotency_table
from app.kernel.identity import Role
from app.kernel.sealing import KEY_BYTES, new_key
from app.kernel.sql import Connection, UtcDateTime, insert
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
# One key per user, sealing what events say of them; erased with the user, so every copy
# of those events becomes unreadable (docs/decisions/0030-crypto-shredding.md).
user_keys = sa.Table(
    "user_keys",
    metadata,
    sa.Column("user_id", sa.String(36), primary_key=True),
    sa.Column("key", sa.LargeBinary(KEY_BYTES), nullable=False),
)
outbox = outbox_table(metadata)
idempotency_keys = idempotency_table(metadata)
REGISTRATION_SCOPE = "POST /api/users"  # the idempotency scope of a registration


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
_key_by_user = sa.select(user_keys.c.key).where(user_keys.c.user_id == sa.bindparam("b_key"))
_registrations = sa.select(idempotency_keys.c.key, idempotency_keys.c.body).where(
    idempotency_keys.c.scope == REGISTRATION_SCOPE
)


class _Registered(msgspec.Struct):
    id: str  # of the user a stored registration response shows


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

    async def insert_key(self, work: SqlUnitOfWork, user_id: str, key: bytes) -> None:
        await work.connection.execute(user_keys.insert().values(user_id=user_id, key=key))

    async def key_of(self, user_id: str) -> bytes | None:
        """The user's key, made now for a user registered before users had keys; None for
        a user who does not exist."""
        the_user = sa.select(users.c.id, sa.literal(new_key(), sa.LargeBinary)).where(
            users.c.id == user_id
        )
        async with self.transaction() as connection:
            await connection.execute(
                insert(connection, user_keys)
                .from_select(["user_id", "key"], the_user)
                .on_conflict_do_nothing()
            )
            row = (await connection.execute(_key_by_user, {"b_key": user_id})).first()
        return None if row is None else bytes(row[0])

    async def key(self, user_id: str) -> bytes | None:
        """The user's key; None once the user is erased (or for a user who never had one)."""
        async with self.reading() as connection:
            row = (await connection.execute(_key_by_user, {"b_key": user_id})).first()
        return None if row is None else bytes(row[0])

    async def erase(self, work: SqlUnitOfWork, user: User) -> bool:
        """Everything this store holds of the user: the record, the key (so what events said
        of them is unreadable wherever they are kept) and the registration response kept
        for its Idempotency-Key. False when another request erased or changed it first."""
        connection = work.connection
        erased = await connection.execute(
            users.delete().where(users.c.id == user.id, users.c.version == user.version)
        )
        if erased.rowcount != 1:
            return False
        await connection.execute(user_keys.delete().where(user_keys.c.user_id == user.id))
        # What was delivered about the user need not wait for the retention purge; every
        # event this module publishes has its user as aggregate (found by the outbox's index).
        await delete_delivered_of(connection, outbox, user.id)
        for key in await _registration_keys_of(connection, user.id):
            await connection.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.scope == REGISTRATION_SCOPE, idempotency_keys.c.key == key
                )
            )
        return True


async def _registration_keys_of(connection: Connection, user_id: str) -> list[str]:
    """The Idempotency-Keys whose stored registration response shows this user (its name and
    email are in it); few, since registrations are kept only for the idempotency TTL."""
    rows = (await connection.execute(_registrations)).all()
    return [key for key, body in rows if msgspec.json.decode(body, type=_Registered).id == user_id]
