"""The one bounded wait for a condition that other tasks or threads make true.

Tests never sleep for a fixed time to let something happen: they poll what they can see,
briefly, until it holds or a deadline passes, and then fail saying what they waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

POLL_SECONDS = 0.005


async def until(
    condition: Callable[[], bool], what: str, timeout: float = 10.0, poll: float = POLL_SECONDS
) -> None:
    """Return once `condition()` holds; fail after `timeout` seconds naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {timeout}s for {what}")
        await anyio.sleep(poll)
