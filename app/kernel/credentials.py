"""What the gateway asks on every authenticated request: a user's current token generation
and role. Answered from a small memory, so the check costs a dict lookup, not a query.

An entry is trusted for `ttl_seconds`, then read again (from the users store, or in split
mode from a users process): a change another process made (create-admin, a users replica,
an operator's SQL) counts within that bound. Changes this process makes or hears of count
at once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from app.kernel.identity import Credentials

TTL_SECONDS = 1.0
SIZE = 10_000

Listener = Callable[[str, Credentials | None], None]


class CurrentCredentials:
    """A CredentialsDirectory over whatever `read` asks."""

    def __init__(
        self,
        read: Callable[[str], Awaitable[Credentials | None]],
        *,
        ttl_seconds: float = TTL_SECONDS,
        size: int = SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl = ttl_seconds
        self._size = size
        self._clock = clock
        # user id -> (credentials, trusted until, read or heard at)
        self._entries: dict[str, tuple[Credentials | None, float, float]] = {}
        self._listeners: list[Listener] = []

    async def current(self, user_id: str) -> Credentials | None:
        entry = self._entries.get(user_id)
        if entry is not None and self._clock() < entry[1]:
            return entry[0]
        return await self.fresh(user_id)

    async def fresh(self, user_id: str) -> Credentials | None:
        """Read now, whatever is kept (what a users process tells other processes)."""
        found = await self._read(user_id)
        kept = self._entries.get(user_id)
        if kept is not None and _newer(kept[0], found):
            # A change committed while we read: the read is already stale.
            return kept[0]
        self._keep(user_id, found)
        return found

    def last_known(self, user_id: str, *, within: float) -> Credentials | None:
        """What was last read or heard for the user if that was at most `within` seconds ago
        (None: nothing that recent, or the user is gone)."""
        entry = self._entries.get(user_id)
        if entry is None or self._clock() - entry[2] > within:
            return None
        return entry[0]

    def changed(self, user_id: str, credentials: Credentials | None) -> None:
        """This process committed a change of a user's credentials (None: the user is gone)."""
        self._keep(user_id, credentials)
        for listener in self._listeners:
            listener(user_id, credentials)

    def on_change(self, listener: Listener) -> None:
        """Call `listener` after each change this process commits (e.g. to tell other
        processes at once rather than after their TTL)."""
        self._listeners.append(listener)

    def heard(self, user_id: str, credentials: Credentials | None) -> None:
        """Another process says it changed a user's credentials."""
        kept = self._entries.get(user_id)
        if kept is None or not _newer(kept[0], credentials):
            self._keep(user_id, credentials)

    def _keep(self, user_id: str, credentials: Credentials | None) -> None:
        if user_id not in self._entries and len(self._entries) >= self._size:
            del self._entries[next(iter(self._entries))]  # the oldest goes first
        now = self._clock()
        self._entries[user_id] = (credentials, now + self._ttl, now)


def _newer(kept: Credentials | None, found: Credentials | None) -> bool:
    """Generations only grow: a kept generation above the one found is the later state."""
    return kept is not None and found is not None and kept.generation > found.generation
