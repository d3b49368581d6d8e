"""What a settled order must stand on, shared by the tests that check the saga after
crashes (tests/e2e/test_crash.py) and after faults in split mode (test_split_faults.py)."""

from __future__ import annotations

# Each final order status: the status its payment may have.
PAYMENT_FOR_ORDER = {
    "PAID": {"SUCCEEDED"},
    "REFUNDED": {"REFUNDED"},
    "CANCELLED": {"FAILED", "REFUNDED"},  # never captured, or captured and given back
}
# Each payment status: the notifications it leaves (a refunded charge was a succeeded one
# first, so it was announced too), sorted.
NOTICES_FOR_PAYMENT = {
    "SUCCEEDED": ["payment_succeeded"],
    "REFUNDED": ["payment_refunded", "payment_succeeded"],
    "FAILED": [],
}
