"""The simulated card processor. Like a real one it authorises a card first and captures
the authorised amount later, only if the order is still wanted. Test tokens decide the
authorisation, Stripe-style (docs/decisions/0007-simulated-processor.md):

    tok_visa              authorised
    tok_chargeDeclined    declined (card_declined)
    tok_processing_error  a transient processing_error on the first two attempts for an
                          order, authorised on the third
    tok_slow              authorised after `slow_seconds`
    anything else         declined (invalid_token)

It keeps its own ledger keyed by order id, one line per order, so however often it is
asked (retries, redeliveries, a crash and a restart, another replica) it authorises an
order once and captures it at most once. An order that is cancelled before its capture is
voided: no later capture, from this process or another replica, can take its money.
Capture and void are one conditional write each on the same line, so whichever comes
first wins and the other sees it, without a lock.

In development its faults can be switched on (`ProcessorFaults`, the payments module's
fault switches): a share of authorisations declined or failing transiently whatever the
token, and a slow card network for every authorisation. A faulty answer goes through the
ledger like any other: a declined order stays declined, a transient one is retried.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Outcome(StrEnum):
    AUTHORISED = "authorised"
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
    """What the processor answers a token's n-th authorisation attempt for one order."""
    if token in ("tok_visa", "tok_slow"):
        return ChargeResult(Outcome.AUTHORISED)
    if token == "tok_chargeDeclined":
        return ChargeResult(Outcome.DECLINED, "card_declined")
    if token == "tok_processing_error":
        if attempt <= TRANSIENT_FAILURES:
            return ChargeResult(Outcome.TRANSIENT, "processing_error")
        return ChargeResult(Outcome.AUTHORISED)
    return ChargeResult(Outcome.DECLINED, "invalid_token")


@dataclass
class ProcessorFaults:
    """What the processor gets wrong on purpose, for a learner to watch the system cope.
    All off by default; a rate is the fraction of authorisations it hits (1.0: every one)."""

    decline_rate: float = 0.0  # declined as card_declined, whatever the token
    transient_rate: float = 0.0  # a transient processing_error, retried by the charge
    slow_seconds: float = 0.0  # every authorisation waits this long first


DECLINED_BY_FAULT = ChargeResult(Outcome.DECLINED, "card_declined")
TRANSIENT_BY_FAULT = ChargeResult(Outcome.TRANSIENT, "processing_error")


class Ledger(Protocol):
    async def count_attempt(
        self, order_id: str, amount: int, currency: str, token: str
    ) -> tuple[int, ChargeResult | None]:
        """Count one more authorisation attempt for the order: its number, and the order's
        answer if it was given before (authorised, captured, declined or voided)."""
        ...

    async def settle_charge(self, order_id: str, result: ChargeResult) -> ChargeResult:
        """Give an order not answered yet this answer; the order's answer either way
        (another one, e.g. voided, may have come first)."""
        ...

    async def capture_charge(self, order_id: str) -> ChargeResult:
        """Capture the order if it is authorised; its final answer either way."""
        ...

    async def void_charge(self, order_id: str) -> ChargeResult:
        """Settle the order as voided unless it was captured or declined; its final answer
        either way."""
        ...

    async def refund_charge(self, order_id: str) -> bool:
        """Mark a captured charge refunded; False if nothing was captured."""
        ...


class CardProcessor:
    """The processor as one payments process reaches it: through a client that has at most
    `concurrency` calls to authorise or capture in flight at once (a real processor's API
    client has a bounded connection pool and rate); the others wait their turn. This is
    what makes a slow processor a bottleneck one payments process cannot widen, and
    replicas can."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        slow_seconds: float,
        concurrency: int = 8,
        faults: ProcessorFaults | None = None,
        chance: random.Random | None = None,
    ) -> None:
        self._ledger = ledger
        self._slow_seconds = slow_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self.faults = faults or ProcessorFaults()
        # Which authorisations a fault rate hits; seeded by tests for a repeatable run.
        self._chance = chance or random.Random()

    async def authorise(
        self, *, order_id: str, amount: int, currency: str, token: str
    ) -> ChargeResult:
        """Authorise the order's amount on the card: authorised, declined, transient, or
        the answer the order already has (an authorisation asked for twice is one)."""
        async with self._slots:
            attempt, answered = await self._ledger.count_attempt(order_id, amount, currency, token)
            if answered is not None:
                return answered
            # The slow card network: a cancel may void the order meanwhile.
            delay = self.faults.slow_seconds + (self._slow_seconds if token == "tok_slow" else 0)
            if delay > 0:
                await asyncio.sleep(delay)
            result = self._faulty_answer()
            if result is None:
                result = decide(token, attempt)
            if result.outcome is Outcome.TRANSIENT:
                return result
            return await self._ledger.settle_charge(order_id, result)

    def _faulty_answer(self) -> ChargeResult | None:
        """A fault's answer instead of the token's, when a switched-on rate hits this
        authorisation; None otherwise (and always when the faults are off)."""
        if self.faults.decline_rate > 0 and self._chance.random() < self.faults.decline_rate:
            return DECLINED_BY_FAULT
        if self.faults.transient_rate > 0 and self._chance.random() < self.faults.transient_rate:
            return TRANSIENT_BY_FAULT
        return None

    async def capture(self, order_id: str) -> ChargeResult:
        """Take the authorised money: captured, or voided if a cancel came first."""
        async with self._slots:
            return await self._ledger.capture_charge(order_id)

    async def void(self, order_id: str) -> ChargeResult:
        """Make sure the order is never captured from now on: its final answer, which is
        the capture (or decline) if one came first, voided otherwise."""
        return await self._ledger.void_charge(order_id)

    async def refund(self, order_id: str) -> bool:
        return await self._ledger.refund_charge(order_id)
