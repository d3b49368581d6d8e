"""An outage is said once: a part that finds something it needs away (its database, the
broker, a stream) says so when it goes and when it is back, not at every retry meanwhile
(docs/decisions/0032-broker-loss-and-not-yet.md, 0033-broker-cluster-and-restarts.md).

The owner keeps its own logger and wording; this keeps the one rule of when to say them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class Outage:
    """One thing being away, seen by one owner: the first `begin` of an outage is said at
    its level, later ones only at DEBUG (with `still`), and `end` is said once, when it was
    away. `lasted` is how long it has been away, for an `end` line that says so."""

    def __init__(self, log: logging.Logger, *, clock: Callable[[], float] = time.monotonic):
        self._log = log
        self._clock = clock
        self._since: float | None = None

    @property
    def away(self) -> bool:
        return self._since is not None

    @property
    def lasted(self) -> float:
        """Seconds since it went; 0.0 while it is not away."""
        return 0.0 if self._since is None else self._clock() - self._since

    def begin(
        self,
        message: str,
        *args: object,
        level: int = logging.WARNING,
        still: str | None = None,
    ) -> bool:
        """It is away: say `message % args` at `level` if this starts the outage (True);
        meanwhile say `still % args` at DEBUG, or nothing without one (False)."""
        if self._since is not None:
            if still is not None:
                self._log.debug(still, *args, stacklevel=2)
            return False
        self._since = self._clock()
        self._log.log(level, message, *args, stacklevel=2)
        return True

    def end(self, message: str, *args: object, level: int = logging.INFO) -> bool:
        """It answered: say `message % args` at `level` if it was away (True), else nothing.
        Pass `lasted` among the args to say how long it was away (it is read before the call)."""
        if self._since is None:
            return False
        self._since = None
        self._log.log(level, message, *args, stacklevel=2)
        return True

    def forget(self) -> None:
        """No longer away, without a word: its owner stopped looking (it closed, it stopped),
        so the next `begin` is said again."""
        self._since = None
