"""Logging for `python -m app`: every line says which request or event flow it belongs to
and which module wrote it; `APP_LOG_FORMAT=json` makes it one JSON object per line."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import msgspec

from app.bus.context import current_cause, current_module, current_request_id
from app.settings import Settings

TEXT = "%(asctime)s %(levelname)s [%(request_id)s] %(module_name)s %(name)s: %(message)s"


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
        return msgspec.json.encode(line).decode()


def configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(ContextFilter())
    handler.setFormatter(
        JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT)
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True  # uvicorn's own lines get the same shape
