"""The failed-login limits, on an injected clock: per email and client, per client across
emails, per email across clients; a moving one-minute window; bounded memory."""

from __future__ import annotations

import pytest

from app.kernel.errors import TooManyRequests
from app.modules.users.login_limits import LoginAttempts

EMAIL = "ada@example.com"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def limits(
    clock: Clock,
    *,
    per_email_and_client: int = 3,
    per_client: int = 100,
    per_email: int = 100,
    max_tracked: int = 1_000,
) -> LoginAttempts:
    return LoginAttempts(
        per_email_and_client=per_email_and_client,
        per_client=per_client,
        per_email=per_email,
        clock=clock,
        max_tracked=max_tracked,
    )


def refused(attempts: LoginAttempts, email: str, client: str) -> TooManyRequests:
    with pytest.raises(TooManyRequests) as raised:
        attempts.check(email, client)
    return raised.value


def test_the_limit_is_reached_after_that_many_failures_and_says_when_to_retry() -> None:
    clock = Clock()
    attempts = limits(clock)
    for _ in range(3):
        attempts.check(EMAIL, "c1")
        attempts.failed(EMAIL, "c1")
        clock.now += 10

    error = refused(attempts, EMAIL, "c1")

    assert error.status == 429
    assert "for this email from this client" in error.detail
    assert error.headers["Retry-After"] == "30"  # the first failure leaves the window at 60 s


def test_the_window_moves_one_failure_at_a_time() -> None:
    clock = Clock()
    attempts = limits(clock)
    for _ in range(3):
        attempts.failed(EMAIL, "c1")
        clock.now += 10
    clock.now = 1_000.0 + 60.5  # the first failure is out of the window, the other two are not

    attempts.check(EMAIL, "c1")
    attempts.failed(EMAIL, "c1")

    assert attempts.retry_after(EMAIL, "c1") == 10


def test_every_spelling_of_an_email_shares_one_limit() -> None:
    attempts = limits(Clock())
    for spelling in (
        " ada@example.com",
        "\u3000ADA@example.com",
        "\u200bada@\uff45\uff58ample.com",
    ):
        attempts.failed(spelling, "c1")

    assert "for this email from this client" in refused(attempts, "Ada@Example.com", "c1").detail


def test_another_client_has_its_own_count_for_the_same_email() -> None:
    attempts = limits(Clock())
    for _ in range(3):
        attempts.failed(EMAIL, "c1")

    attempts.check(EMAIL, "c2")


def test_one_client_trying_many_emails_is_limited_across_them() -> None:
    attempts = limits(Clock(), per_client=5)
    for number in range(5):
        attempts.failed(f"user.{number}@example.com", "c1")

    assert "from this client" in refused(attempts, "someone.else@example.com", "c1").detail
    attempts.check("someone.else@example.com", "c2")


def test_many_clients_guessing_one_email_are_limited_together() -> None:
    attempts = limits(Clock(), per_email=5)
    for number in range(5):
        attempts.failed(EMAIL, f"c{number}")

    assert refused(attempts, EMAIL, "c-new").detail.startswith("too many failed logins for this")
    attempts.check("someone.else@example.com", "c-new")


def test_a_success_forgives_only_that_clients_mistypes_for_that_email() -> None:
    attempts = limits(Clock(), per_client=4)
    for _ in range(3):
        attempts.failed(EMAIL, "c1")
    attempts.succeeded(EMAIL, "c1")
    attempts.check(EMAIL, "c1")

    attempts.failed("other@example.com", "c1")

    assert "from this client" in refused(attempts, EMAIL, "c1").detail


@pytest.mark.slow  # a flood of 100,000 failures
def test_a_hundred_thousand_made_up_emails_keep_memory_within_its_bound() -> None:
    clock = Clock()
    attempts = limits(clock, per_client=10**9, per_email=10**9, max_tracked=5_000)
    for number in range(100_000):
        attempts.failed(f"made.up.{number}@example.com", f"client-{number % 997}")
        clock.now += 0.0001

    assert attempts.tracked() <= 5_000
    # The oldest entries make room: a fresh count still counts.
    for _ in range(3):
        attempts.failed(EMAIL, "c1")
    assert attempts.tracked() <= 5_000
    refused(attempts, EMAIL, "c1")


def test_entries_are_dropped_once_their_window_has_passed() -> None:
    clock = Clock()
    attempts = limits(clock)
    for number in range(50):
        attempts.failed(f"user.{number}@example.com", "c1")
    assert attempts.tracked() == 50

    clock.now += 61

    assert attempts.tracked() == 0
