"""A small memory of entries each good until its own deadline: what the gateway keeps of
tokens it verified, and what the split keeps of the proofs it signed and checked.

At most `size` entries; one past its deadline is dropped when it is asked for, and when the
memory is full the oldest entry goes first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Expiring(Generic[K, V]):
    def __init__(self, size: int, clock: Callable[[], float] | None = None) -> None:
        self.size = size
        self._clock = clock or time.time  # read when made: a test may set the clock first
        self._entries: dict[K, tuple[V, float]] = {}

    def get(self, key: K) -> V | None:
        """The value kept for `key` while now < its deadline; None (and dropped) after."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, until = entry
        if self._clock() < until:
            return value
        del self._entries[key]
        return None

    def put(self, key: K, value: V, until: float) -> None:
        if key not in self._entries and len(self._entries) >= self.size:
            del self._entries[next(iter(self._entries))]  # the oldest goes first
        self._entries[key] = (value, until)

    def __len__(self) -> int:
        return len(self._entries)
