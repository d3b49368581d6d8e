"""What a settled order must stand on, shared by the tests that check the saga after
crashes (tests/e2e/test_crash.py), after faults in split mode (test_split_faults.py) and
under generated histories (tests/property/test_saga_invariants.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Records:
    """What the API shows the admin: every order by id, and each order's payments and the
    kinds of its notifications."""

    orders: dict[str, dict[str, Any]]
    payments_of: defaultdict[str, list[dict[str, Any]]]
    notices_of: defaultdict[str, list[str]]


async def read_records(pages: Callable[[str], Awaitable[list[dict[str, Any]]]]) -> Records:
    """Every page of orders, payments and notifications, read with `pages(path)`."""
    orders = {order["id"]: order for order in await pages("/api/orders")}
    payments_of: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for payment in await pages("/api/payments"):
        payments_of[payment["order_id"]].append(payment)
    notices_of: defaultdict[str, list[str]] = defaultdict(list)
    for notice in await pages("/api/notifications"):
        notices_of[notice["order_id"]].append(notice["kind"])
    return Records(orders, payments_of, notices_of)


def promise_breaches(
    order: dict[str, Any], total: int, token: str, cancel: int | None
) -> list[str]:
    """Where a settled order broke what its client was told: the total acknowledged, a
    declined card cancels, a cancel answered 200 (it was PENDING) leaves it CANCELLED and
    one answered 202 (it was PAID) leaves it REFUNDED."""
    breaches = []
    if order["total"] != total:
        breaches.append(f"total {order['total']}, acknowledged {total}")
    if token == "tok_chargeDeclined" and order["status"] != "CANCELLED":
        breaches.append("a declined card did not cancel it")
    if cancel == 200 and order["status"] != "CANCELLED":
        breaches.append(f"cancelled with 200 (it was PENDING) but {order['status']}")
    if cancel == 202 and order["status"] != "REFUNDED":
        breaches.append(f"cancelled with 202 (it was PAID) but {order['status']}")
    return breaches


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
