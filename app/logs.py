"""Logging for `python -m app`: every line says which request or event flow it belongs to
and which module wrote it; `APP_LOG_FORMAT=json` makes it one JSON object per line.

Either way a record is one line whatever a client put in it: a path or header with a newline
cannot forge a record, nor an escape sequence drive the terminal that shows the log.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from types import TracebackType
from typing import IO

import msgspec

from app.bus.context import current_cause, current_module, current_request_id
from app.kernel.settings import Settings

TEXT = "%(asctime)s %(levelname)s [%(request_id)s] %(module_name)s %(name)s: %(message)s"

# C0 controls, DEL, C1 controls (0x85 is a line break to some readers, 0x9b starts a terminal
# escape), and the Unicode line and paragraph separators.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
TRACEBACK_INDENT = "    "

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def _escape(control: re.Match[str]) -> str:
    char = control.group()
    return SHORT_ESCAPES.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) <= 0xFF else f"\\u{ord(char):04x}"
    )


def escape_controls(text: str) -> str:
    """`text` on one line: each control character written as its Python escape (`\\n`,
    `\\x1b`, `\\u2028`)."""
    # Every control character is unprintable: most lines are done with one fast C loop.
    return text if text.isprintable() else CONTROL.sub(_escape, text)


def _json_escape(control: re.Match[str]) -> str:
    return f"\\u{ord(control.group()):04x}"


# What JSON leaves raw (it escapes only C0): DEL, C1 and the separators, as \uXXXX.
JSON_RAW_CONTROL = re.compile("[\x7f-\x9f\u2028\u2029]")


class TextFormatter(logging.Formatter):
    """The text format: the record's line with its control characters escaped; a traceback
    keeps its lines (one per frame) but each is indented, so that no line of it, not even
    an exception message a client wrote, reads as a record of its own."""

    def __init__(self) -> None:
        super().__init__(TEXT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: ExcInfo) -> str:
        return self._indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return self._indented(super().formatStack(stack_info))

    @staticmethod
    def _indented(text: str) -> str:
        return "\n".join(TRACEBACK_INDENT + escape_controls(line) for line in text.split("\n"))


class ContextFilter(logging.Filter):
    """Stamps each record with the request id, the correlation id (the request that started
    an event flow) and the module doing the work."""

    def filter(self, record: logging.LogRecord) -> bool:
        cause = current_cause.get()
        request_id = current_request_id.get()
        record.request_id = request_id or "-"
        record.correlation_id = cause.correlation_id if cause else (request_id or "-")
        record.module_name = current_module.get() or _module_of(record.name)
        return True


def _module_of(logger: str) -> str:
    parts = logger.split(".")
    if parts[:2] == ["app", "modules"] and len(parts) > 2:
        return parts[2]
    if parts[:2] == ["app", "bus"]:
        return "bus"
    return "gateway" if parts[0] == "app" else parts[0]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "module": getattr(record, "module_name", None),
            "request_id": getattr(record, "request_id", None),
            "correlation_id": getattr(record, "correlation_id", None),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        encoded = msgspec.json.encode(line).decode()
        return JSON_RAW_CONTROL.sub(_json_escape, encoded)  # still the same JSON


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> None:
    """Every record to `stream` (standard error by default), in APP_LOG_FORMAT."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True  # uvicorn's own lines get the same shape
