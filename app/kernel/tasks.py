"""Background tasks a part of the system owns and stops."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has ended. What it ended with is not
    raised here; a cancellation of the caller itself still is."""
    if task is None:
        return
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
