"""The wait between two tries of an unreachable store (it restarts): one rule for a
consumer's handler and a payment's charge (docs/decisions/0033-broker-cluster-and-restarts.md)."""

from __future__ import annotations

from app.bus.retry import STORE_NAP_SECONDS, RetryPolicy


def test_the_naps_double_from_the_base_delay_up_to_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.05)
    naps = [policy.store_nap(n) for n in range(1, 8)]
    assert naps == [0.1, 0.2, 0.4, 0.8, STORE_NAP_SECONDS, STORE_NAP_SECONDS, STORE_NAP_SECONDS]


def test_an_outage_of_any_length_naps_at_most_the_cap() -> None:
    policy = RetryPolicy(base_delay=0.05)
    assert policy.store_nap(10**6) == STORE_NAP_SECONDS  # no overflow, however long it lasts
