"""What a settled order must stand on, shared by the tests that check the saga after
crashes (tests/e2e/test_crash.py) and after faults in split mode (test_split_faults.py)."""

from __future__ import annotations

from typing import Any

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


def order_breaches(
    order: dict[str, Any], payments: list[dict[str, Any]], notices: list[str]
) -> list[str]:
    """What is wrong with a settled order, its payments and the notification kinds it left."""
    if order["status"] == "PENDING":
        return ["stays PENDING"]
    breaches = []
    captured = [p for p in payments if p["status"] in ("SUCCEEDED", "REFUNDED")]
    if len(captured) > 1:
        breaches.append("charged twice")
    if len(payments) != 1:
        return [*breaches, f"{len(payments)} payments"]
    (payment,) = payments
    if payment["status"] not in PAYMENT_FOR_ORDER[order["status"]]:
        breaches.append(f"a {payment['status']} payment")
    if payment["amount"] != order["total"]:
        breaches.append(f"total {order['total']}, payment amount {payment['amount']}")
    if sorted(notices) != NOTICES_FOR_PAYMENT.get(payment["status"], []):
        breaches.append(f"notifications {sorted(notices)} for a {payment['status']} payment")
    return breaches


def ledger_breaches(order: dict[str, Any], entry: tuple[str | None, bool] | None) -> list[str]:
    """The processor holds money for exactly the PAID orders; a REFUNDED one was captured
    and refunded. `entry` is the processor's (outcome, refunded) for the order, if any."""
    outcome, refunded = entry if entry is not None else (None, False)
    captured = outcome == "captured"
    held = captured and not refunded
    if held != (order["status"] == "PAID"):
        return [f"the processor {'holds' if held else 'holds no'} money: {outcome}, {refunded=}"]
    if order["status"] == "REFUNDED" and not (captured and refunded):
        return [f"REFUNDED, but the processor did not capture and refund it: {outcome}"]
    return []
