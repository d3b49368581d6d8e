"""Counts work the bus has under way, so tests and shutdown can wait until it is quiet."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Activity:
    def __init__(self) -> None:
        self._busy = 0
        self._quiet = asyncio.Event()
        self._quiet.set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def busy(self) -> int:
        return self._busy

    def begin(self) -> None:
        self._busy += 1
        self._quiet.clear()

    def end(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._quiet.set()

    def spawn(self, work: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any]:
        """Run work in the background, counted as activity until it ends."""
        self.begin()
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self.end()

    async def wait_quiet(self, timeout: float) -> None:
        """Return once nothing is under way; TimeoutError naming the busy count otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            try:
                await asyncio.wait_for(self._quiet.wait(), max(remaining, 0))
            except TimeoutError:
                raise TimeoutError(
                    f"bus still busy after {timeout}s: {self._busy} under way"
                ) from None
            # A finished handler may have scheduled follow-up work on the next loop turn.
            for _ in range(3):
                await asyncio.sleep(0)
            if self._busy == 0:
                return

    async def cancel_all(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
