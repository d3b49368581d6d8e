"""Failed logins have their own, stricter limits, counted over the last minute
(docs/decisions/0012-limits.md):

- per address and client: the owner of an account mistyping from one place;
- per client, whatever the address: one client trying many accounts (credential stuffing);
- per address, whatever the client: many clients guessing one account.

Addresses are counted by `email_key`, the key the account is looked up by, so no spelling of
an address gets fresh attempts at its account. Each count lives in a bounded, expiring map:
a flood of made-up addresses cannot grow memory past `max_tracked` entries per count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable

from cachetools import TTLCache

from app.kernel.errors import TooManyRequests
from app.modules.users.emails import email_key

WINDOW_SECONDS = 60.0
# Failures are recorded only after a password hash, and hashing is bounded (passwords.py): a
# few thousand a minute per process, far below this, so a live entry is not pushed out.
MAX_TRACKED = 100_000


class FailureWindow:
    """The times of the last `limit` failures per key within the window, in a bounded map."""

    def __init__(self, limit: int, clock: Callable[[], float], max_keys: int) -> None:
        self.limit = limit
        self._clock = clock
        # An entry expires a window after its latest failure: then none of its times count.
        self._times: TTLCache[Hashable, tuple[float, ...]] = TTLCache(
            max_keys, WINDOW_SECONDS, timer=clock
        )

    def __len__(self) -> int:
        self._times.expire()
        return len(self._times)

    def retry_after(self, key: Hashable) -> float:
        """Seconds until one more failure may be tried; 0 when it may be now."""
        now = self._clock()
        recent = self._recent(key, now)
        if len(recent) < self.limit:
            return 0.0
        return recent[-self.limit] + WINDOW_SECONDS - now

    def add(self, key: Hashable) -> None:
        now = self._clock()
        self._times[key] = (*self._recent(key, now), now)[-self.limit :]

    def forget(self, key: Hashable) -> None:
        self._times.pop(key, None)

    def _recent(self, key: Hashable, now: float) -> tuple[float, ...]:
        cutoff = now - WINDOW_SECONDS
        return tuple(moment for moment in self._times.get(key, ()) if moment > cutoff)


class LoginAttempts:
    """The three failed-login counts of this process. Unknown addresses count like known
    ones, so a 429 says nothing about whether an account exists."""

    def __init__(
        self,
        *,
        per_email_and_client: int,
        per_client: int,
        per_email: int,
        clock: Callable[[], float] = time.monotonic,
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.max_tracked = max_tracked
        self._pairs = FailureWindow(per_email_and_client, clock, max_tracked)
        self._clients = FailureWindow(per_client, clock, max_tracked)
        self._emails = FailureWindow(per_email, clock, max_tracked)

    def tracked(self) -> int:
        """How many keys the largest of the three counts holds now (at most `max_tracked`)."""
        return max(len(self._pairs), len(self._clients), len(self._emails))

    def retry_after(self, email: str, client: str) -> int:
        """Whole seconds until this email may be tried from this client; 0 when it may be now."""
        key = email_key(email)
        waits = (
            self._pairs.retry_after((key, client)),
            self._clients.retry_after(client),
            self._emails.retry_after(key),
        )
        return math.ceil(max(waits))

    def check(self, email: str, client: str) -> None:
        key = email_key(email)
        for wait, whose in (
            (self._pairs.retry_after((key, client)), "for this email from this client"),
            (self._clients.retry_after(client), "from this client"),
            (self._emails.retry_after(key), "for this email"),
        ):
            if wait > 0:
                raise TooManyRequests(
                    f"too many failed logins {whose}; try again later",
                    retry_after_seconds=max(self.retry_after(email, client), 1),
                )

    def failed(self, email: str, client: str) -> None:
        key = email_key(email)
        self._pairs.add((key, client))
        self._clients.add(client)
        self._emails.add(key)

    def succeeded(self, email: str, client: str) -> None:
        """The owner got in from here: their own mistypes from here are forgiven. The other
        counts stay, or an attacker with one account could wipe their per-client count."""
        self._pairs.forget((email_key(email), client))
