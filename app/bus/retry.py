"""Exponential backoff with jitter, bounded attempts; and the wait for a prerequisite.

A handler that raises NotYet says "not yet, not wrong": what it needs (a user's contact, an
order another event creates) has not reached this consumer, because events of different
types travel apart over a broker. That wait spends none of the event's attempts: it lasts
until the consumer handles anything else (the prerequisite, usually) or a backoff delay
passes, for at most `not_yet_seconds`; only then is "not yet" an ordinary failure, retried
and dead-lettered as any other (docs/decisions/0032-broker-loss-and-not-yet.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass


class NotYet(Exception):
    """Raised by a handler whose event's prerequisite has not arrived yet."""


# The longest wait between two tries while a store is unreachable (it restarts): a handler
# or a charge waits for it as long as it takes, spending no attempt
# (docs/decisions/0033-broker-cluster-and-restarts.md).
STORE_NAP_SECONDS = 1.0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.05
    max_delay: float = 5.0
    not_yet_seconds: float = 60.0  # how long a NotYet is waited for before attempts count

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based): half fixed, half random."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))

    def store_nap(self, naps: int) -> float:
        """Seconds to wait before trying an unreachable store again, the `naps`-th time
        (1-based): doubling from base_delay up to STORE_NAP_SECONDS."""
        return float(min(STORE_NAP_SECONDS, self.base_delay * 2 ** min(naps, 20)))


# A lane waiting for a prerequisite looks again at the latest this often, even if nothing
# else is handled meanwhile (the prerequisite may be handled by another consumer).
NOT_YET_LONGEST_NAP = 1.0


class Progress:
    """What lanes waiting for a prerequisite wait on: any handling done by their consumer."""

    def __init__(self) -> None:
        self._moved = asyncio.Event()

    def moved(self) -> None:
        """Wake every waiter; later waiters wait for the next one."""
        self._moved.set()
        self._moved = asyncio.Event()

    async def after(self, seconds: float) -> None:
        """Until the next handling, or `seconds`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._moved.wait(), seconds)


class PrerequisiteWait:
    """One event's wait for its prerequisite (one per handling, started at its first NotYet)."""

    def __init__(self, policy: RetryPolicy, progress: Progress) -> None:
        self._policy = policy
        self._progress = progress
        self._deadline: float | None = None
        self.naps = 0

    async def waited(self) -> bool:
        """Wait a little and return True while within `not_yet_seconds` of the first NotYet;
        False once past it (the NotYet then counts as a failed attempt)."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self._policy.not_yet_seconds
        if now >= self._deadline:
            return False
        self.naps += 1
        backoff = self._policy.base_delay * 2 ** min(self.naps, 30)
        nap = min(NOT_YET_LONGEST_NAP, backoff, self._deadline - now)
        await self._progress.after(nap)
        return True
