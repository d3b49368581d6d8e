"""A cancel, inserted at every point of a charge, never lets the processor keep the money.

The charge runs for real (the payments service, its SQL store, the processor's ledger),
but every call it makes to the store or the ledger waits at a turnstile, before the call
and after the ledger's writes, until the example lets it on. Between two of its steps an
example may deliver OrderCancelled (new or redelivered), deliver OrderPlaced again, or kill
the charge where it waits (a process dying mid-charge) and have it adopted again. The
cancels are handled by a second payments service on the same store, as another replica
would: nothing but the store and the ledger is shared.

Then, once every charge has ended: the ledger never went from voided to captured, never
holds both, refunds only a capture; the payment has one final status, its events say
exactly that status, and a cancel that came before the capture left no capture, no
refund and no PaymentSucceeded.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from app.bus import Envelope, RetryPolicy
from app.bus.envelope import wrap
from app.kernel.ids import new_id
from app.modules.orders.contracts import OrderCancelled, OrderPlaced
from app.modules.payments.module import module as payments_module
from app.modules.payments.payment import Payment
from app.modules.payments.processor import CardProcessor
from app.modules.payments.service import PaymentService
from app.modules.payments.store import PaymentsStore
from tests.support.scenario import Scenario, scenario

pytestmark = pytest.mark.anyio

TOTAL = 1250
STILL = 5.0  # seconds a charge may take to reach its next turnstile, or to end
# Which ledger states may follow which: an order is answered once, an authorisation is
# captured or voided once, and nothing comes after captured, declined or voided.
LEDGER_MOVES = {
    None: {None, "authorised", "declined", "voided"},
    "authorised": {"authorised", "captured", "voided"},
    "captured": {"captured"},
    "declined": {"declined"},
    "voided": {"voided"},
}
EVENTS_FOR = {
    "SUCCEEDED": ["PaymentSucceeded"],
    "REFUNDED": ["PaymentSucceeded", "PaymentRefunded"],
    "FAILED": ["PaymentFailed"],
}
LEDGER_FOR = {
    "SUCCEEDED": {("captured", False)},
    "REFUNDED": {("captured", True)},
    "FAILED": {("declined", False), ("voided", False), (None, False)},
}


class Turnstile:
    """The payments store as the charging service sees it: each call the charge makes
    waits to be let on, and the ledger's writes wait again once written."""

    # A charge's write waits before its unit of work opens: inside it, the store's
    # transaction is held, and a gate there would hold the other replica's cancel up too.
    GATED = ("by_order", "unit_of_work", "count_attempt", "settle_charge", "capture_charge")
    WRITES = ("count_attempt", "settle_charge", "capture_charge")

    def __init__(self, store: PaymentsStore) -> None:
        self.store = store
        self.waiting: list[tuple[str, asyncio.Future[None]]] = []
        self.arrived = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.store, name)
        if name not in self.GATED:
            return real
        if name == "unit_of_work":

            @asynccontextmanager
            async def gated_work(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
                if kwargs.get("cause") is None:  # the charge's writes; not OrderPlaced's
                    await self._wait("before unit_of_work")
                async with real(*args, **kwargs) as work:
                    yield work

            return gated_work

        async def gated(*args: Any, **kwargs: Any) -> Any:
            await self._wait(f"before {name}")
            result = await real(*args, **kwargs)
            if name in self.WRITES:
                await self._wait(f"after {name}")
            return result

        return gated

    async def _wait(self, where: str) -> None:
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((where, turn))
        self.arrived.set()
        await turn

    def let_on(self) -> str | None:
        """Let the waiting charge take its next step; where it was, or None."""
        if not self.waiting:
            return None
        where, turn = self.waiting.pop(0)
        self.arrived.clear()
        turn.set_result(None)
        return where

    def kill(self) -> bool:
        """The process of the waiting charge dies where the charge waits."""
        if not self.waiting:
            return False
        _, turn = self.waiting.pop(0)
        self.arrived.clear()
        turn.cancel()
        return True


@dataclass
class Charge:
    """One order's charge, driven step by step, and what an example saw of it."""

    payments: Scenario
    turnstile: Turnstile
    charger: PaymentService
    canceller: PaymentService
    token: str
    order_id: str = field(default_factory=new_id)
    placed: list[Envelope] = field(default_factory=list)
    cancels: list[Envelope] = field(default_factory=list)
    cancelled_before_capture: bool = False
    steps_taken: int = 0
    ledger_states: list[tuple[str | None, bool] | None] = field(default_factory=list)

    async def until_still(self) -> None:
        """Until the charge waits at the turnstile, or no charge runs any more."""
        arrived = asyncio.ensure_future(self.turnstile.arrived.wait())
        quiet = asyncio.ensure_future(self.payments.seams.runtime.bus.wait_quiet(STILL))
        done, pending = await asyncio.wait(
            {arrived, quiet}, timeout=STILL, return_when=asyncio.FIRST_COMPLETED
        )
        for waiting in pending:
            waiting.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        assert done, f"the charge neither took a step nor ended within {STILL}s"
        await self.note_ledger()

    async def note_ledger(self) -> None:
        self.ledger_states.append(await self.payments.store.ledger_entry(self.order_id))

    async def place(self, *, anew: bool = False) -> None:
        if anew or not self.placed:
            self.placed.append(self.envelope(self.order_placed(), sequence=1))
        await self.charger.on_order_placed(self.order_placed(), self.placed[-1])
        await self.until_still()

    async def cancel(self, *, anew: bool) -> None:
        """Deliver OrderCancelled: a new one, or the last one again."""
        if anew or not self.cancels:
            self.cancels.append(self.envelope(self.order_cancelled(), sequence=2))
        entry = await self.payments.store.ledger_entry(self.order_id)
        if entry is None or entry[0] != "captured":
            self.cancelled_before_capture = True
        # Another replica's cancel finishes while this charge waits where it is: no lock.
        await asyncio.wait_for(
            self.canceller.on_order_cancelled(self.order_cancelled(), self.cancels[-1]), STILL
        )
        await self.until_still()

    async def cancel_when_due(self, cancel_at: int | None, *, ended: bool = False) -> None:
        """The example's cancel, once the charge took `cancel_at` steps (or ended)."""
        if cancel_at is None or self.cancels or (self.steps_taken < cancel_at and not ended):
            return
        waiting = self.turnstile.waiting
        event(f"cancelled {waiting[0][0]}" if waiting else "cancelled after the charge ended")
        await self.cancel(anew=True)

    async def step(self) -> bool:
        """Let the charge take one step; False if no charge was waiting."""
        if self.turnstile.let_on() is None:
            return False
        self.steps_taken += 1
        await self.until_still()
        return True

    async def crash_and_adopt(self) -> None:
        if self.turnstile.kill():
            await self.until_still()  # the killed charge has ended
            await self.charger.adopt_orphans()
            await self.until_still()

    def order_placed(self) -> OrderPlaced:
        return OrderPlaced(
            order_id=self.order_id,
            user_id="u1",
            total=TOTAL,
            currency="EUR",
            payment_token=self.token,
            item_count=1,
        )

    def order_cancelled(self) -> OrderCancelled:
        return OrderCancelled(order_id=self.order_id, user_id="u1", status_when_cancelled="PENDING")

    def envelope(self, event: OrderPlaced | OrderCancelled, *, sequence: int) -> Envelope:
        return wrap(
            event,
            producer="orders",
            aggregate_id=self.order_id,
            sequence=sequence,
            correlation_id="c",
            causation_id=None,
        )


@pytest.fixture
async def payments(anyio_backend: str) -> AsyncIterator[Scenario]:
    # Long retry ceilings keep the module's own service from adopting these charges.
    async with scenario(payments_module, payment_retry_max_seconds="300") as alone:
        yield alone


def services(payments: Scenario, turnstile: Turnstile) -> tuple[PaymentService, PaymentService]:
    """The service that charges, through the turnstile, and a replica that cancels."""
    store: PaymentsStore = payments.store
    bus = next(m.bus for m in payments.seams.runtime.modules if m.module is payments_module)
    retry = RetryPolicy(max_attempts=5, base_delay=0, max_delay=0)
    gated = cast(PaymentsStore, turnstile)
    charger = PaymentService(
        gated, bus, CardProcessor(gated, slow_seconds=0), retry, orphaned_after=0
    )
    canceller = PaymentService(store, bus, CardProcessor(store, slow_seconds=0), retry)
    return charger, canceller


TOKENS = st.sampled_from(["tok_visa", "tok_slow", "tok_processing_error", "tok_chargeDeclined"])
# After how many steps of the charge the order is cancelled; None: it is not. A card
# captured at once takes 9 steps, tok_processing_error 27.
CANCEL_AT = st.none() | st.integers(min_value=0, max_value=9) | st.integers(0, 30)
# What else happens meanwhile. Redelivered and second cancels only follow the first one.
ACTIONS = st.lists(
    st.sampled_from(
        ["step"] * 4 + ["cancel again", "cancel anew", "placed again", "placed anew", "crash"]
    ),
    max_size=40,
)


@pytest.mark.slow
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(token=TOKENS, cancel_at=CANCEL_AT, actions=ACTIONS)
async def test_a_cancel_at_any_step_of_a_charge_never_leaves_a_capture_behind_it(
    payments: Scenario, token: str, cancel_at: int | None, actions: list[str]
) -> None:
    turnstile = Turnstile(payments.store)
    charger, canceller = services(payments, turnstile)
    charge = Charge(payments, turnstile, charger, canceller, token)
    try:
        await charge.place()
        for action in actions:
            await charge.cancel_when_due(cancel_at)
            if action == "step":
                await charge.step()
            elif action.startswith("cancel") and charge.cancels:
                await charge.cancel(anew=action == "cancel anew")
            elif action.startswith("placed"):
                await charge.place(anew=action == "placed anew")
            elif action == "crash":
                await charge.crash_and_adopt()
        await charge.cancel_when_due(cancel_at)
        while await charge.step():
            await charge.cancel_when_due(cancel_at)
        await charge.cancel_when_due(cancel_at, ended=True)
        await payments.settle()
    finally:
        while turnstile.kill():  # a failed example leaves no charge waiting forever
            pass

    await check(payments, charge)


async def check(payments: Scenario, charge: Charge) -> None:
    token = charge.token
    store: PaymentsStore = payments.store
    rows = await store.page(order_id=charge.order_id, user_id=None, after=None, limit=10)
    assert len(rows) == 1, rows
    payment: Payment = rows[0]
    entry = await store.ledger_entry(charge.order_id)
    states = [*charge.ledger_states, entry]
    event(f"{token}: {payment.status} {entry}, cancelled={bool(charge.cancels)}")

    for before, after in itertools.pairwise(states):
        was = None if before is None else before[0]
        now = None if after is None else after[0]
        assert now in LEDGER_MOVES[was], f"the ledger went from {was} to {now}: {states}"
    assert entry is None or not entry[1] or entry[0] == "captured", f"refunded {entry}"

    assert payment.status in EVENTS_FOR, f"no final status: {payment}"
    events = [e.type for e in payments.published if e.payload.get("order_id") == charge.order_id]
    assert events == EVENTS_FOR[payment.status], (payment, events)
    assert (entry or (None, False)) in LEDGER_FOR[payment.status], (payment, entry)

    if charge.cancels:
        assert payment.status != "SUCCEEDED", "a cancelled order's money was kept"
    if charge.cancelled_before_capture:
        assert (payment.status, "PaymentSucceeded" in events) == ("FAILED", False), payment
        assert entry is None or entry[0] != "captured", entry
    if not charge.cancels:
        expected = "FAILED" if token == "tok_chargeDeclined" else "SUCCEEDED"
        assert payment.status == expected, payment
    if payment.status == "FAILED" and token != "tok_chargeDeclined":
        assert payment.failure_reason == "order_cancelled", payment
