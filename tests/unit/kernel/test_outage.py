"""An outage is said once (app/kernel/outage.py): its first "away" and its "back", with how
long it lasted if the owner asks, whatever happens between; a "back" that was never away,
or an outage its owner stopped watching, says nothing."""

from __future__ import annotations

import logging

import pytest

from app.kernel.outage import Outage

LOGGER = "tests.outage"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def said(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


@pytest.fixture
def outage(caplog: pytest.LogCaptureFixture) -> Outage:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return Outage(logging.getLogger(LOGGER), clock=Clock())


def test_away_twice_is_one_line(outage: Outage, caplog: pytest.LogCaptureFixture) -> None:
    first = outage.begin("the %s is gone: %r", "database", "refused")
    again = outage.begin("the %s is gone: %r", "database", "reset")

    assert (first, again) == (True, False)
    assert outage.away
    assert said(caplog) == [(logging.WARNING, "the database is gone: 'refused'")]


def test_away_meanwhile_is_said_at_debug_with_its_own_words(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    for error in ("refused", "reset"):
        outage.begin("%s gone: %s", "stream", error, level=logging.INFO, still="%s still: %s")

    assert said(caplog) == [
        (logging.INFO, "stream gone: refused"),
        (logging.DEBUG, "stream still: reset"),
    ]


def test_back_is_one_line_with_how_long_it_lasted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = Clock()
    outage = Outage(logging.getLogger(LOGGER), clock=clock)
    outage.begin("broker gone")
    clock.now += 2.5
    outage.begin("broker gone")
    clock.now += 1.0

    back = outage.end("broker back after %.1f s", outage.lasted)
    back_again = outage.end("broker back after %.1f s", outage.lasted)

    assert (back, back_again) == (True, False)
    assert not outage.away
    assert said(caplog) == [
        (logging.WARNING, "broker gone"),
        (logging.INFO, "broker back after 3.5 s"),
    ]


def test_back_without_away_is_nothing(outage: Outage, caplog: pytest.LogCaptureFixture) -> None:
    assert not outage.end("the database answers again", level=logging.WARNING)
    assert outage.lasted == 0.0
    assert said(caplog) == []


def test_an_outage_forgotten_ends_unsaid_and_the_next_one_is_said(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    outage.begin("gone %d", 1)
    outage.forget()
    assert not outage.end("back")
    outage.begin("gone %d", 2)

    assert said(caplog) == [(logging.WARNING, "gone 1"), (logging.WARNING, "gone 2")]


def test_a_line_names_its_owner_not_this_class(
    outage: Outage, caplog: pytest.LogCaptureFixture
) -> None:
    outage.begin("gone")
    outage.end("back")

    assert [(r.pathname, r.funcName) for r in caplog.records] == 2 * [
        (__file__, "test_a_line_names_its_owner_not_this_class")
    ]
