"""The test tiers hold: a helper that starts a real server fails a test that does not carry
the marker for it (tests/support/tiers.py), so `-m "not services"` never starts one."""

from __future__ import annotations

import pytest

from tests.support.stores import BACKENDS
from tests.support.tiers import require_marks


def test_a_test_without_the_marker_fails_naming_the_one_to_add() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"pytest\.mark\.services"):
        require_marks("services")


@pytest.mark.services
def test_a_test_with_the_marker_may_start_the_server() -> None:
    require_marks("services")


@pytest.mark.services
def test_a_split_system_needs_split_as_well_as_services() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"pytest\.mark\.split"):
        require_marks("services", "split")


def test_every_store_backend_on_a_real_server_is_marked_services() -> None:
    marked = {
        backend.values[0]
        for backend in BACKENDS
        if not isinstance(backend, str) and any(m.name == "services" for m in backend.marks)
    }
    assert marked == {"postgresql", "mongodb"}
