"""The test tiers, and the check that keeps servers and processes out of the fast one.

Markers (pyproject.toml): `services` needs PostgreSQL, NATS or the nats-server binary;
`split` runs the system split into processes (and so is `services` too); `slow` takes more
than ~2 s. The inner loop is `pytest -m "not services and not slow"`.

A helper that starts a real server says so with `require_marks("services")`, one that
starts `python -m app` with `require_marks("slow")`: the test it runs under must carry the
marker (on the test, its module's `pytestmark`, or the fixture param that chose the
server), or it fails naming the marker to add. So a new test cannot slip a server or a
process into the fast tier unnoticed, whichever way it reaches the helper. Where the
server is missing, `skip_or_fail` skips the test, or fails it under SEAMS_REQUIRE_SERVICES=1
(CI), where nothing may be skipped for want of a server.
"""

from __future__ import annotations

import os

import pytest

REQUIRE_SERVICES = os.environ.get("SEAMS_REQUIRE_SERVICES") == "1"

# The test whose setup or body is running now (set by tests/conftest.py before its fixtures
# are set up); a plain global, as a module-scoped fixture may start a server on a portal
# thread.
_running: pytest.Item | None = None


def now_running(item: pytest.Item | None) -> None:
    global _running
    _running = item


def require_marks(*names: str) -> None:
    """Fail the running test unless it carries every one of these markers."""
    item = _running
    if item is None:  # called outside a test run (a bench script): nothing to keep honest
        return
    missing = [name for name in names if item.get_closest_marker(name) is None]
    if missing:
        marks = ", ".join(f"pytest.mark.{name}" for name in missing)
        pytest.fail(
            f"{item.nodeid} starts what only {marks} may (see tests/support/tiers.py): "
            "mark the test, its module's pytestmark, or the fixture param that chose it",
            pytrace=False,
        )


def skip_or_fail(reason: str) -> None:
    """Skip the running test for want of a server, or fail it where servers are required."""
    if REQUIRE_SERVICES:
        pytest.fail(f"SEAMS_REQUIRE_SERVICES=1 but {reason}")
    pytest.skip(reason)
