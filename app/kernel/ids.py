"""Identifiers and timestamps shared by every module."""

from __future__ import annotations

from datetime import UTC, datetime

import uuid_utils


def new_id() -> str:
    """A time-ordered UUIDv7 string: sorting ids sorts by creation, which pages rely on.
    (uuid-utils: 0.2 µs an id; the pure-Python uuid6 took 4.5 µs, 2 per event.)"""
    return str(uuid_utils.uuid7())


def utcnow() -> datetime:
    return datetime.now(UTC)


def isoformat(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
