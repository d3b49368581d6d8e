"""Waiting for a log line: the moment a module says it did something no API shows yet (a
first failed attempt, a retry being scheduled), so a test acts right then, not after a sleep."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager


class LogWatch(logging.Handler):
    """Sets `seen` when a log record containing `fragment` is emitted."""

    def __init__(self, fragment: str) -> None:
        super().__init__(logging.DEBUG)
        self.fragment = fragment
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.fragment in record.getMessage():
            self.seen.set()


@contextmanager
def watching(logger: str, fragment: str) -> Iterator[asyncio.Event]:
    """An event set once `logger` (or a logger below it) logs a line containing `fragment`;
    the watch ends with the block. The logger's level must let the line through."""
    watch = LogWatch(fragment)
    logging.getLogger(logger).addHandler(watch)
    try:
        yield watch.seen
    finally:
        logging.getLogger(logger).removeHandler(watch)
