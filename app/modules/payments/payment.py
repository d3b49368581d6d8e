"""A payment and the rules of its life: which changes each status allows, and which events
each change causes. Pure: no store, no processor, no clock (the caller says what time it is).

A payment is PROCESSING from the moment its order is placed until its charge settles it:
SUCCEEDED once captured, FAILED once declined, voided, given up on or cancelled. A
SUCCEEDED payment whose order is cancelled is REFUNDED (docs/decisions/0008-cancel.md).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

from app.kernel.errors import IllegalTransition
from app.modules.payments.contracts import PaymentFailed, PaymentRefunded, PaymentSucceeded
from app.modules.payments.views import PlacedOrder

PaymentEvent = PaymentSucceeded | PaymentFailed | PaymentRefunded


class PaymentStatus(StrEnum):
    PROCESSING = "PROCESSING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    REFUNDED = "REFUNDED"


class Payment(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    order_id: str
    user_id: str
    amount: int  # minor units
    currency: str
    token: str
    status: PaymentStatus
    attempts: int  # authorisations asked of the processor
    failure_reason: str | None
    event_sequence: int  # the sequence number of the last event it caused
    created_at: datetime
    updated_at: datetime

    @classmethod
    def start(cls, *, payment_id: str, placed: PlacedOrder, now: datetime) -> Payment:
        """The payment of a placed order, before any attempt to charge it."""
        return cls(
            id=payment_id,
            order_id=placed.order_id,
            user_id=placed.user_id,
            amount=placed.total,
            currency=placed.currency,
            token=placed.payment_token,
            status=PaymentStatus.PROCESSING,
            attempts=0,
            failure_reason=None,
            event_sequence=0,
            created_at=now,
            updated_at=now,
        )

    @property
    def is_settled(self) -> bool:
        return self.status != PaymentStatus.PROCESSING

    def record_attempt(self, now: datetime) -> Payment:
        """One more authorisation asked of the processor (whatever it answered)."""
        self._require(PaymentStatus.PROCESSING, "be charged")
        return msgspec.structs.replace(self, attempts=self.attempts + 1, updated_at=now)

    def succeed(self, now: datetime) -> tuple[Payment, list[PaymentEvent]]:
        """The processor captured the money."""
        self._require(PaymentStatus.PROCESSING, "succeed")
        succeeded = self._settled(PaymentStatus.SUCCEEDED, None, now)
        return succeeded, [PaymentSucceeded(**succeeded._facts())]

    def fail(self, reason: str | None, now: datetime) -> tuple[Payment, list[PaymentEvent]]:
        """The charge ended without the money: declined, voided, given up on or cancelled."""
        self._require(PaymentStatus.PROCESSING, "fail")
        failed = self._settled(PaymentStatus.FAILED, reason, now)
        return failed, [PaymentFailed(**failed._facts(), reason=reason or "failed")]

    def refund(self, now: datetime) -> tuple[Payment, list[PaymentEvent]]:
        """The captured money went back: only a SUCCEEDED payment is refunded."""
        self._require(PaymentStatus.SUCCEEDED, "be refunded")
        refunded = self._settled(PaymentStatus.REFUNDED, None, now)
        return refunded, [PaymentRefunded(**refunded._facts())]

    def _require(self, status: PaymentStatus, change: str) -> None:
        if self.status != status:
            raise IllegalTransition(
                f"payment {self.id!r} is {self.status}: only a {status} payment can {change}"
            )

    def _settled(self, status: PaymentStatus, reason: str | None, now: datetime) -> Payment:
        return msgspec.structs.replace(
            self,
            status=status,
            failure_reason=reason,
            event_sequence=self.event_sequence + 1,
            updated_at=now,
        )

    def _facts(self) -> dict[str, Any]:
        """What every payment event says about its payment."""
        return {
            "payment_id": self.id,
            "order_id": self.order_id,
            "user_id": self.user_id,
            "amount": self.amount,
            "currency": self.currency,
        }
