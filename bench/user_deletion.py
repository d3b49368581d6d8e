"""One user's deletion in the users store, timed on an outbox full of delivered user events
(docs/decisions/0039-outbox-aggregate-column.md).

    python bench/user_deletion.py [--rows 20000] [--deletions 20] [--url URL]

A users store (an SQLite file in a temporary directory, or `--url`, e.g. an empty
PostgreSQL database) gets `--rows / 2` users, each with a delivered UserRegistered and
UserUpdated in the outbox (envelopes of the real size: a sealed name and email). Then
`--deletions` of them are deleted one at a time as DELETE /api/users/{id} does it (the
store's erase and UserDeleted in one unit of work, without the HTTP round trip), and the
median and the slowest are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from harness import commit, machine

from app.bus import Bus, Envelope, ModuleBus, event_type_name
from app.bus.sql_outbox import add_to_outbox
from app.bus.transport import InProcessTransport
from app.kernel.ids import isoformat, new_id, utcnow
from app.modules.users.contracts import UserDeleted, UserRegistered, UserUpdated
from app.modules.users.store import UsersStore, outbox
from app.modules.users.user import User

SEALED = "aesgcm1:" + "x" * 140  # what a sealed name and email weigh in a v2 payload
BATCH = 1000


class Recorded(ModuleBus):
    """The users module's bus without a relay: a commit's envelopes are only counted."""

    def __init__(self) -> None:
        super().__init__(
            Bus(InProcessTransport()), "users", publishes=(UserDeleted,), subscribes=()
        )
        self.handed = 0

    def committed(self, envelopes: Sequence[Envelope]) -> None:
        self.handed += len(envelopes)


def a_user(n: int) -> User:
    now = utcnow()
    return User(
        id=new_id(),
        name=f"User {n}",
        email=f"user.{n}@example.com",
        password_hash="x",
        role="user",
        created_at=now,
        updated_at=now,
        version=2,
        event_sequence=2,
    )


def an_envelope(user: User, event: type, sequence: int) -> Envelope:
    return Envelope(
        id=new_id(),
        type=event_type_name(event),
        version=2,
        occurred_at=isoformat(utcnow()),
        producer="users",
        aggregate_id=user.id,
        sequence=sequence,
        correlation_id=new_id(),
        payload={"user_id": user.id, "personal": SEALED},
    )


async def build(store: UsersStore, users: int) -> list[User]:
    made = [a_user(n) for n in range(users)]
    bus = Recorded()
    for start in range(0, users, BATCH):
        async with store.unit_of_work(bus) as work:
            for user in made[start : start + BATCH]:
                await store.insert(work, user)
            await add_to_outbox(
                work.connection,
                outbox,
                [
                    an_envelope(user, event, sequence)
                    for user in made[start : start + BATCH]
                    for sequence, event in ((1, UserRegistered), (2, UserUpdated))
                ],
            )
    async with store.transaction() as connection:
        await connection.execute(outbox.update().values(delivered_at=utcnow()))
    return made


async def delete(store: UsersStore, bus: ModuleBus, user: User) -> float:
    started = time.perf_counter()
    gone, events = user.delete(utcnow())
    async with store.unit_of_work(bus) as work:
        if not await store.erase(work, user):
            raise RuntimeError(f"{user.id} was not erased")
        work.publish(gone, events)
    return time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--deletions", type=int, default=20)
    parser.add_argument("--url", default=None)
    args = parser.parse_args()
    print(f"commit {commit()}  {machine()}")
    with tempfile.TemporaryDirectory() as directory:
        url = args.url or f"sqlite:///{Path(directory) / 'users.db'}"
        store = UsersStore(url)
        await store.open()
        try:
            made = await build(store, args.rows // 2)
            bus = Recorded()
            step = max(1, len(made) // args.deletions)
            times = [await delete(store, bus, user) for user in made[::step][: args.deletions]]
            assert bus.handed == len(times)  # one UserDeleted per deletion
            async with store.reading() as connection:
                left = await connection.execute(sa.select(sa.func.count()).select_from(outbox))
                rows_left = left.scalar_one()
        finally:
            await store.close()
    print(
        f"{args.rows} delivered user-event rows ({store.display_url.split(':')[0]}); "
        f"{len(times)} deletions, {rows_left} rows left:\n"
        f"  median {statistics.median(times) * 1000:.2f} ms, slowest {max(times) * 1000:.2f} ms"
    )


if __name__ == "__main__":
    asyncio.run(main())
