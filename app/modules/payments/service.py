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
from collections.abc import Sequence
from datetime import timedelta

from app.bus import Envelope, ModuleBus, RetryPolicy
from app.kernel.errors import Conflict, NotFound, StoreUnavailable
from app.kernel.identity import NOTHING, Caller
from app.kernel.ids import new_id, utcnow
from app.kernel.tasks import cancel_and_wait
from app.modules.payments.payment import Payment, PaymentEvent, PaymentStatus
from app.modules.payments.processor import CardProcessor, Outcome
from app.modules.payments.store import PaymentsStore
from app.modules.payments.views import CancelledOrder, PlacedOrder

log = logging.getLogger("app.modules.payments")


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

    async def get(self, payment_id: str, caller: Caller) -> Payment:
        """Another user's payment is a 404, like one that does not exist."""
        payment = await self._store.by_id(payment_id)
        if payment is None or not caller.may_see(payment.user_id):
            raise NotFound(f"no payment {payment_id!r}")
        return payment

    async def page(
        self,
        caller: Caller,
        *,
        order_id: str | None,
        user_id: str | None = None,
        after: str | None,
        limit: int,
    ) -> list[Payment]:
        """A user lists only their own payments; an admin, anyone's (one user's with
        `user_id`: what an export composes, app/gateway/export.py)."""
        owner = caller.owner_filter(user_id)
        if owner is NOTHING:
            return []
        return await self._store.page(order_id=order_id, user_id=owner, after=after, limit=limit)

    # Reacting to orders.

    async def on_order_placed(self, event: PlacedOrder, envelope: Envelope) -> None:
        payment = Payment.start(payment_id=new_id(), placed=event, now=utcnow())
        async with self._store.unit_of_work(self._bus, cause=envelope) as work:
            opened = not work.handled_before and await self._store.open_payment(work, payment)
        if opened and work.committed:
            self._start_charge(event.order_id)

    async def on_order_cancelled(self, event: CancelledOrder, envelope: Envelope) -> None:
        if await self._store.was_handled(envelope):
            return
        # First make sure the processor never captures this order from now on: an
        # authorisation not captured yet is voided. This also covers a cancel that
        # overtook its OrderPlaced (over a broker, events of two types travel on two
        # consumers) and a charge running in another replica or awaiting the processor.
        settled = await self._processor.void(event.order_id)
        for _ in range(MAX_WRITE_RACES):
            payment = await self._store.by_order(event.order_id)
            if payment is None or payment.status in (PaymentStatus.FAILED, PaymentStatus.REFUNDED):
                async with self._store.unit_of_work(self._bus, cause=envelope):
                    return  # handled: nothing to change but the claim
            now = utcnow()
            if (
                payment.status == PaymentStatus.PROCESSING
                and settled.outcome is not Outcome.CAPTURED
            ):
                if await self._write(payment, *payment.fail("order_cancelled", now), envelope):
                    return
            elif payment.status == PaymentStatus.PROCESSING:
                # The processor captured it before a crash left the payment PROCESSING (or
                # just before this cancel): record the capture, then refund it below.
                await self._write(payment, *payment.record_attempt(now).succeed(now))
            else:
                await self._processor.refund(event.order_id)  # idempotent: the ledger knows
                if await self._write(payment, *payment.refund(now), envelope):
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
        task = self._bus.background(self._charge_through(order_id), name=f"charge:{order_id}")
        task.add_done_callback(lambda _: self._charging.discard(order_id))

    async def _charge_through(self, order_id: str) -> None:
        """The charge, begun again from its stored state while its store is unreachable
        (it restarts): safe, as adopting one is (docs/decisions/0033)."""
        naps = 0
        while True:
            try:
                return await self._charge(order_id)
            except StoreUnavailable:
                naps += 1
                if naps == 1:
                    log.info("charge for order %s waits for the payments store", order_id)
                await asyncio.sleep(self._retry.store_nap(naps))

    async def _charge(self, order_id: str) -> None:
        while True:
            payment = await self._store.by_order(order_id)
            if payment is None or payment.status != PaymentStatus.PROCESSING:
                return  # settled elsewhere, or cancelled
            result = await self._processor.authorise(
                order_id=order_id,
                amount=payment.amount,
                currency=payment.currency,
                token=payment.token,
            )
            if result.outcome is Outcome.AUTHORISED:
                if not await self._still_wanted(order_id):
                    return  # its cancel voided the authorisation and settled the payment
                result = await self._processor.capture(order_id)  # voided if a cancel won
            now = utcnow()
            attempted = payment.record_attempt(now)
            if result.outcome is Outcome.CAPTURED:
                await self._write(payment, *attempted.succeed(now))
                return
            if result.outcome in (Outcome.DECLINED, Outcome.VOIDED):
                await self._write(payment, *attempted.fail(result.reason, now))
                return
            if attempted.attempts >= self._retry.max_attempts:
                reason = f"{result.reason}: gave up after {attempted.attempts} attempts"
                await self._write(payment, *attempted.fail(reason, now))
                return
            log.info("charge for order %s: %s, retrying", order_id, result.reason)
            await self._write(payment, attempted, [])
            await asyncio.sleep(self._retry.delay(attempted.attempts))

    async def _still_wanted(self, order_id: str) -> bool:
        """Whether nothing settled the payment (a cancel settles it) since the charge began."""
        payment = await self._store.by_order(order_id)
        return payment is not None and payment.status == PaymentStatus.PROCESSING

    async def _write(
        self,
        payment: Payment,
        changed: Payment,
        events: Sequence[PaymentEvent],
        cause: Envelope | None = None,
    ) -> bool:
        """Write the change and its events, only from the status `payment` has here; with a
        cause, claim it too. False, and nothing written, if the payment had moved on
        meanwhile (or the cause was handled already)."""
        async with self._store.unit_of_work(self._bus, cause=cause) as work:
            if work.handled_before:
                return False
            if await self._store.transition(work, changed, expected_status=payment.status):
                work.publish(changed, events)
            else:
                work.cancel()
        return work.committed
