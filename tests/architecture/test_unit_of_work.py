"""No module hands events to the relay by hand: only a unit of work does, after its commit
(app/bus/unit_of_work.py, docs/decisions/0023-unit-of-work.md)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE_CODE = [
    *sorted((ROOT / "app" / "modules").rglob("*.py")),
    *sorted((ROOT / "tests" / "example_shipping").rglob("*.py")),
]
BY_HAND = re.compile(r"\.(committed|envelopes?|attach_outbox)\(")


def test_no_module_wraps_or_hands_off_events_itself() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in MODULE_CODE
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if BY_HAND.search(line)
    ]
    assert found == [], "use work.publish(aggregate, events) inside a unit of work instead"


def test_the_check_catches_a_service_that_hands_off_by_hand() -> None:
    assert BY_HAND.search("        self._bus.committed(envelopes)")
    assert BY_HAND.search("envelopes = self._bus.envelopes(events, aggregate_id=x)")
    assert not BY_HAND.search("        work.publish(order, events)")
