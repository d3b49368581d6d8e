"""Failed logins have their own, stricter limit per email and client (decision 12)."""

from __future__ import annotations

import math
import time
from collections import deque

from app.kernel.errors import TooManyRequests

WINDOW_SECONDS = 60.0


class LoginAttempts:
    """A sliding window of failed attempts per (email, client), in this process."""

    def __init__(self, per_minute: int) -> None:
        self._limit = per_minute
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def check(self, email: str, client: str) -> None:
        failures = self._recent((email.casefold(), client))
        if len(failures) >= self._limit:
            wait = math.ceil(failures[0] + WINDOW_SECONDS - time.monotonic())
            raise TooManyRequests(
                "too many failed logins for this email from this client; try again later",
                retry_after_seconds=max(wait, 1),
            )

    def failed(self, email: str, client: str) -> None:
        key = (email.casefold(), client)
        self._failures.setdefault(key, deque()).append(time.monotonic())

    def succeeded(self, email: str, client: str) -> None:
        self._failures.pop((email.casefold(), client), None)

    def _recent(self, key: tuple[str, str]) -> deque[float]:
        failures = self._failures.get(key, deque())
        cutoff = time.monotonic() - WINDOW_SECONDS
        while failures and failures[0] < cutoff:
            failures.popleft()
        if not failures:
            self._failures.pop(key, None)
        return failures
