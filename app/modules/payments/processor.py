"""The simulated card processor. Test tokens decide its answer, Stripe-style (decision 7):

    tok_visa              captured
    tok_chargeDeclined    declined (card_declined)
    tok_processing_error  a transient processing_error on the first two attempts for an
                          order, captured on the third
    tok_slow              captured after `slow_seconds`
    anything else         declined (invalid_token)

Like a real processor it keeps its own ledger keyed by order id, so however often it is
asked (retries, redeliveries, a crash and a restart) it captures an order at most once.
An order's charge can be voided before it is settled (the order was cancelled): the ledger
settles it as voided, and no later attempt, from this process or another replica, can
capture it. Capture and void are decided by one conditional write each, so they exclude
each other without a lock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    CAPTURED = "captured"
    DECLINED = "declined"
    TRANSIENT = "transient"
    VOIDED = "voided"


@dataclass(frozen=True)
class ChargeResult:
    outcome: Outcome
    reason: str | None = None


TRANSIENT_FAILURES = 2


def decide(token: str, attempt: int) -> ChargeResult:
    """What the processor answers for a token on the n-th attempt for one order."""
    if token in ("tok_visa", "tok_slow"):
        return ChargeResult(Outcome.CAPTURED)
    if token == "tok_chargeDeclined":
        return ChargeResult(Outcome.DECLINED, "card_declined")
    if token == "tok_processing_error":
        if attempt <= TRANSIENT_FAILURES:
            return ChargeResult(Outcome.TRANSIENT, "processing_error")
        return ChargeResult(Outcome.CAPTURED)
    return ChargeResult(Outcome.DECLINED, "invalid_token")


class Ledger(Protocol):
    async def count_attempt(
        self, order_id: str, amount: int, currency: str, token: str
    ) -> tuple[int, ChargeResult | None]:
        """Count one more attempt for the order: its number, and the final answer if the
        order was settled before."""
        ...

    async def settle_charge(self, order_id: str, result: ChargeResult) -> ChargeResult:
        """Settle an unsettled order with this result; the order's final result either way
        (another answer, e.g. voided, may have settled it first)."""
        ...

    async def void_charge(self, order_id: str) -> ChargeResult:
        """Settle the order as voided unless it was settled; its final result either way."""
        ...

    async def settled_charge(self, order_id: str) -> ChargeResult | None: ...

    async def refund_charge(self, order_id: str) -> bool:
        """Mark a captured charge refunded; False if nothing was captured."""
        ...


class CardProcessor:
    """The processor as one payments process reaches it: through a client that has at most
    `concurrency` charges in flight at once (a real processor's API client has a bounded
    connection pool and rate); the others wait their turn. This is what makes a slow
    processor a bottleneck one payments process cannot widen, and replicas can."""

    def __init__(self, ledger: Ledger, *, slow_seconds: float, concurrency: int = 8) -> None:
        self._ledger = ledger
        self._slow_seconds = slow_seconds
        self._slots = asyncio.Semaphore(concurrency)

    async def charge(
        self, *, order_id: str, amount: int, currency: str, token: str
    ) -> ChargeResult:
        async with self._slots:
            return await self._charge(order_id, amount, currency, token)

    async def _charge(self, order_id: str, amount: int, currency: str, token: str) -> ChargeResult:
        if token == "tok_slow":
            await asyncio.sleep(self._slow_seconds)
        attempt, settled = await self._ledger.count_attempt(order_id, amount, currency, token)
        if settled is not None:
            return settled
        result = decide(token, attempt)
        if result.outcome is Outcome.TRANSIENT:
            return result
        return await self._ledger.settle_charge(order_id, result)

    async def void(self, order_id: str) -> ChargeResult:
        """Make sure the order is never captured from now on: its final result, which is
        the capture (or decline) if one came first, voided otherwise."""
        return await self._ledger.void_charge(order_id)

    async def refund(self, order_id: str) -> bool:
        return await self._ledger.refund_charge(order_id)

    async def settled(self, order_id: str) -> ChargeResult | None:
        """The final answer the processor gave for an order, if it gave one."""
        return await self._ledger.settled_charge(order_id)
