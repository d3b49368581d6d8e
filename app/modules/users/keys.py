"""The users module's keyring: the one door to the keys sealing what events say of a user
(docs/decisions/0030-crypto-shredding.md). Other modules reach it through the PersonalData
they were handed, never through the users store."""

from __future__ import annotations

from app.kernel.sealing import open_sealed
from app.modules.users.store import UsersStore


class UserKeys:
    """A Keyring over the users store's keys table."""

    def __init__(self, store: UsersStore) -> None:
        self._store = store

    async def open(self, subject: str, sealed: str) -> bytes | None:
        key = await self._store.key(subject)
        return None if key is None else open_sealed(key, sealed, subject=subject)
