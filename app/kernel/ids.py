"""Identifiers and timestamps shared by every module."""

from __future__ import annotations

from datetime import UTC, datetime

import uuid6


def new_id() -> str:
    """A time-ordered UUIDv7 string: sorting ids sorts by creation, which pages rely on."""
    return str(uuid6.uuid7())


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
