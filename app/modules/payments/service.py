"""The payments domain: authorise an order's card, capture it once if the order is still
wanted, retry what the processor says is transient, void or refund a cancelled order's
charge. No HTTP here, no SQL.

A charge runs in the background, not inside the OrderPlaced handler, so that an
OrderCancelled for the same order can stop it. No lock is held while the processor
answers: a cancel voids the order at the processor at once, whatever the charge is doing,
and the charge checks the order is still wanted right before it captures. The processor's
conditional capture and void, and the store's status checks, settle any race left between
the two, in one process or across replicas.

A charge whose process died (a replica SIGKILLed in split mode) is no message the broker
could deliver again: its OrderPlaced was acked once the payment was open. So every payments
process adopts, now and then, the PROCESSING payments nobody has written for longer than a
live charge ever leaves one, and charges them itself; a restart adopts them all at once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import timedelta
from typing import Any

from app.bus import Envelope, ModuleBus, RetryPolicy
from app.kernel.errors import Conflict, NotFound
from app.kernel.identity import Caller
from app.kernel.ids import new_id, utcnow
from app.kernel.tasks import cancel_and_wait
from app.modules.orders.contracts import OrderCancelled, OrderPlaced
from app.modules.payments.contracts import PaymentFailed, PaymentRefunded, PaymentSucceeded
from app.modules.payments.processor import CardProcessor, Outcome
from app.modules.payments.store import PaymentRow, PaymentsStore

log = logging.getLogger("app.modules.payments")

PROCESSING = "PROCESSING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
REFUNDED = "REFUNDED"


# A cancel that loses a write to a charge settling the same payment looks again; each loss
# moves the payment on (PROCESSING to settled, SUCCEEDED to REFUNDED), so a few suffice.
MAX_WRITE_RACES = 5


class PaymentService:
    def __init__(
        self,
        store: PaymentsStore,
        bus: ModuleBus,
        processor: CardProcessor,
        retry: RetryPolicy,
        *,
        orphaned_after: float = 30.0,
    ) -> None:
        self._store = store
        self._bus = bus
        self._processor = processor
        self._retry = retry
        # A live charge writes its payment at least this often (attempts, retry delays and
        # a slow card included); one left longer was abandoned by a process that died.
        self._orphaned_after = orphaned_after
        self._charging: set[str] = set()  # orders this process is charging now
        self._watch: asyncio.Task[None] | None = None

    # Reading.

    async def get(self, payment_id: str, caller: Caller) -> PaymentRow:
        """Another user's payment is a 404, like one that does not exist."""
        payment = await self._store.by_id(payment_id)
        if payment is None or not caller.may_see(payment.user_id):
            raise NotFound(f"no payment {payment_id!r}")
        return payment

    async def page(
        self, caller: Caller, *, order_id: str | None, after: str | None, limit: int
    ) -> list[PaymentRow]:
        """A user lists only their own payments; an admin, everyone's."""
        user_id = None if caller.is_admin else caller.id
        return await self._store.page(order_id=order_id, user_id=user_id, after=after, limit=limit)

    # Reacting to orders.

    async def on_order_placed(self, event: OrderPlaced, envelope: Envelope) -> None:
        now = utcnow()
        payment = PaymentRow(
            id=new_id(),
            order_id=event.order_id,
            user_id=event.user_id,
            amount=event.total,
            currency=event.currency,
            token=event.payment_token,
            status=PROCESSING,
            attempts=0,
            failure_reason=None,
            event_sequence=0,
            created_at=now,
            updated_at=now,
        )
        if await self._store.open_payment(payment, envelope):
            self._start_charge(event.order_id)

    async def on_order_cancelled(self, event: OrderCancelled, envelope: Envelope) -> None:
        if await self._store.was_handled(envelope):
            return
        # First make sure the processor never captures this order from now on: an
        # authorisation not captured yet is voided. This also covers a cancel that
        # overtook its OrderPlaced (over a broker, events of two types travel on two
        # consumers) and a charge running in another replica or awaiting the processor.
        settled = await self._processor.void(event.order_id)
        for _ in range(MAX_WRITE_RACES):
            payment = await self._store.by_order(event.order_id)
            if payment is None or payment.status in (FAILED, REFUNDED):
                await self._store.record_inbox(envelope)
                return
            if payment.status == PROCESSING and settled.outcome is not Outcome.CAPTURED:
                if await self._finish(payment, FAILED, "order_cancelled", cause=envelope):
                    return
            elif payment.status == PROCESSING:
                # The processor captured it before a crash left the payment PROCESSING (or
                # just before this cancel): record the capture, then refund it below.
                await self._finish(payment, SUCCEEDED, None, attempts=payment.attempts + 1)
            else:
                await self._processor.refund(event.order_id)  # idempotent: the ledger knows
                if await self._finish(payment, REFUNDED, None, cause=envelope):
                    return
            # A charge settled the payment meanwhile, or this event was handled: look again.
        raise Conflict(f"payment for order {event.order_id!r} kept changing during its cancel")

    async def resume(self) -> None:
        """On start: carry on with every charge a previous process left unfinished, then
        keep adopting the charges of processes that die while this one runs."""
        for order_id in await self._store.processing_orders():
            self._start_charge(order_id)
        if self._watch is None:
            self._watch = asyncio.create_task(self._adopt_forever(), name="payments:orphans")

    async def stop(self) -> None:
        await cancel_and_wait(self._watch)
        self._watch = None

    async def adopt_orphans(self) -> int:
        """Charge the PROCESSING payments nobody wrote for `orphaned_after` seconds that
        this process is not charging; how many. Adopting a charge that was alive after all
        is safe: the processor's ledger captures an order once, the store's status checks
        settle a payment once."""
        since = utcnow() - timedelta(seconds=self._orphaned_after)
        adopted = 0
        for order_id in await self._store.processing_orders(untouched_since=since):
            if order_id not in self._charging:
                log.warning("adopting the charge for order %s: its process went away", order_id)
                self._start_charge(order_id)
                adopted += 1
        return adopted

    async def _adopt_forever(self) -> None:
        while True:
            await asyncio.sleep(self._orphaned_after / 2)
            try:
                await self.adopt_orphans()
            except Exception as error:  # the store may be away a moment: look again later
                log.warning("looking for abandoned charges failed: %r", error)

    # Charging.

    def _start_charge(self, order_id: str) -> None:
        if order_id in self._charging:
            return
        self._charging.add(order_id)
        task = self._bus.background(self._charge(order_id), name=f"charge:{order_id}")
        task.add_done_callback(lambda _: self._charging.discard(order_id))

    async def _charge(self, order_id: str) -> None:
        while True:
            payment = await self._store.by_order(order_id)
            if payment is None or payment.status != PROCESSING:
                return  # settled elsewhere, or cancelled
            result = await self._processor.authorise(
                order_id=order_id,
                amount=payment.amount,
                currency=payment.currency,
                token=payment.token,
            )
            attempts = payment.attempts + 1
            if result.outcome is Outcome.AUTHORISED:
                if not await self._still_wanted(order_id):
                    return  # its cancel voided the authorisation and settled the payment
                result = await self._processor.capture(order_id)  # voided if a cancel won
            if result.outcome is Outcome.CAPTURED:
                await self._finish(payment, SUCCEEDED, None, attempts=attempts)
                return
            if result.outcome in (Outcome.DECLINED, Outcome.VOIDED):
                await self._finish(payment, FAILED, result.reason, attempts=attempts)
                return
            if attempts >= self._retry.max_attempts:
                reason = f"{result.reason}: gave up after {attempts} attempts"
                await self._finish(payment, FAILED, reason, attempts=attempts)
                return
            log.info("charge for order %s: %s, retrying", order_id, result.reason)
            await self._store.transition(
                replace(payment, attempts=attempts, updated_at=utcnow()),
                expected_status=PROCESSING,
                events=[],
            )
            await asyncio.sleep(self._retry.delay(attempts))

    async def _still_wanted(self, order_id: str) -> bool:
        """Whether nothing settled the payment (a cancel settles it) since the charge began."""
        payment = await self._store.by_order(order_id)
        return payment is not None and payment.status == PROCESSING

    async def _finish(
        self,
        payment: PaymentRow,
        status: str,
        reason: str | None,
        *,
        attempts: int | None = None,
        cause: Envelope | None = None,
    ) -> PaymentRow | None:
        """Settle the payment from the status it has here, with its event; None if it had
        moved on meanwhile (or `cause` was handled already), and nothing is written."""
        changed = replace(
            payment,
            status=status,
            failure_reason=reason,
            attempts=payment.attempts if attempts is None else attempts,
            event_sequence=payment.event_sequence + 1,
            updated_at=utcnow(),
        )
        events = [
            self._bus.envelope(
                self._event_for(changed), aggregate_id=changed.id, sequence=changed.event_sequence
            )
        ]
        written = await self._store.transition(
            changed, expected_status=payment.status, events=events, cause=cause
        )
        if not written:
            return None
        self._bus.committed(events)
        return changed

    @staticmethod
    def _event_for(
        payment: PaymentRow,
    ) -> PaymentSucceeded | PaymentFailed | PaymentRefunded:
        fields: dict[str, Any] = {
            "payment_id": payment.id,
            "order_id": payment.order_id,
            "user_id": payment.user_id,
            "amount": payment.amount,
            "currency": payment.currency,
        }
        if payment.status == SUCCEEDED:
            return PaymentSucceeded(**fields)
        if payment.status == REFUNDED:
            return PaymentRefunded(**fields)
        return PaymentFailed(**fields, reason=payment.failure_reason or "failed")
