"""The saga's books stay straight while delivery goes wrong in every way the bus promises
to survive: envelopes delivered again, consumers that fail until their events become dead
letters, replays once they are fixed, and restarts of the whole app on the same data dir.

After every step, once the bus is quiet: while a consumer is broken nothing unsafe has
happened (no second capture, no notification without the payment behind it, the processor
holds exactly what the succeeded payments say); with every consumer working there is no
dead letter left and the saga's invariants hold in full (tests/property/test_saga_invariants.py),
including that no order is left PENDING.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import MultipleResults, invariant, multiple, precondition, rule

from app.kernel.settings import Settings
from app.modules.notifications.store import NotificationsStore
from app.modules.payments.store import PaymentsStore
from tests.e2e.test_delivery import Recorder
from tests.property.test_saga_invariants import (
    TOKENS,
    Placed,
    SagaMachine,
    SagaOnFiles,
    answered,
)
from tests.support.seams import Seams, fast_settings, running

# The consumers a rule may break, each where its event handlers write to its store.
BREAKABLE = ("payments", "notifications", "orders")
CAPTURED = {"SUCCEEDED", "REFUNDED"}  # payment statuses the processor captured for
# The card of an order placed just before a restart, or None for a restart at rest.
under_way = st.none() | st.sampled_from(TOKENS)


class HandlerBroken(RuntimeError):
    """What a broken consumer's store raises, every time, until it is mended."""


def failing(consumer: str) -> Callable[..., Any]:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise HandlerBroken(f"{consumer} database is read-only")

    return broken


def failing_for_handlers(original: Callable[..., Any]) -> Callable[..., Any]:
    """The orders store's update, refused only when an event handler writes through it
    (it names the event it handled); cancels from the API still work."""

    async def update_order(self: Any, order_id: str, **fields: Any) -> Any:
        if fields.get("add_handled") is not None:
            raise HandlerBroken("orders database is read-only for payment outcomes")
        return await original(self, order_id, **fields)

    return update_order


class DeliveryMachine(SagaOnFiles):
    """The saga machine's clients, plus redeliveries, broken consumers and restarts.

    The host task of SagaMachine serves the app again on the same data dir whenever a
    restart is asked for: the relays then recover what the outbox still holds, the
    consumers their attempts, dead letters and parked events, payments its unfinished
    charges. Consumers are broken by patching their store classes, so a restarted app
    is just as broken; teardown always puts the originals back.
    """

    seams: Seams  # in this process: its runtime is what the rules reach into

    def __init__(self) -> None:
        self.recorder = Recorder()
        self._restart = asyncio.Event()
        self._restarted: asyncio.Future[Seams] | None = None
        # consumer -> (class patched, attribute, the original it replaced)
        self._breakages: dict[str, tuple[type, str, Any]] = {}
        super().__init__()

    def store_settings(self) -> Settings:
        return fast_settings(data_dir=self._data_dir.name, bus_max_attempts="2")

    async def _serve(self, ready: asyncio.Future[Seams]) -> None:
        while True:
            async with running(self.store_settings(), prepare=self.recorder.attach) as seams:
                ready.set_result(seams)
                stop = asyncio.ensure_future(self._stop.wait())
                restart = asyncio.ensure_future(self._restart.wait())
                await asyncio.wait((stop, restart), return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                restart.cancel()
            if self._stop.is_set() or self._restarted is None:
                return
            self._restart.clear()
            ready = self._restarted

    # The parent's quiet-time rules are this machine's invariant, checked after every step;
    # refused input is its business, and leaves more steps here for delivery going wrong.
    settle = None  # type: ignore[assignment]
    check_after_quiet = None  # type: ignore[assignment]
    refuse_invalid_order = None  # type: ignore[assignment]

    # Rules: what the delivery machinery must survive.

    @precondition(lambda self: self.recorder.envelopes)
    @rule(
        picks=st.lists(st.integers(min_value=0, max_value=1_000), min_size=1, max_size=4),
        at_once=st.booleans(),
    )
    def deliver_again(self, picks: list[int], at_once: bool) -> None:
        """Publish envelopes already delivered again, straight through the transport: one
        after another, or all at once."""
        sent = list({envelope.id: envelope for envelope in self.recorder.envelopes}.values())
        again = [sent[pick % len(sent)] for pick in picks]
        for envelope in again:
            event(f"delivered again: {envelope.type}")
        publish = self.seams.runtime.bus.transport.publish

        async def one_after_another() -> None:
            for envelope in again:
                await publish(envelope)

        async def all_at_once() -> None:
            await asyncio.gather(*(publish(envelope) for envelope in again))

        self.run(all_at_once() if at_once else one_after_another())

    @rule(consumer=st.sampled_from(BREAKABLE))
    def break_consumer(self, consumer: str) -> None:
        """Make a consumer's handlers fail at every attempt, until mended."""
        if consumer in self._breakages:
            return
        owner, name = self._weak_spot(consumer)
        original = owner.__dict__[name]
        self._breakages[consumer] = (owner, name, original)
        if consumer == "orders":
            setattr(owner, name, failing_for_handlers(original))
        else:
            setattr(owner, name, failing(consumer))
        event(f"broke {consumer}")

    @precondition(lambda self: self._breakages)
    @rule()
    def mend_and_replay(self) -> None:
        self._mend()
        replayed = self.run(self._replay_dead_letters())
        event(f"replayed {min(replayed, 3)}{'+' if replayed > 3 else ''} dead letters")

    @rule(target=SagaMachine.orders, user=SagaMachine.users, token=under_way)
    def restart(self, user: dict[str, Any], token: str | None) -> MultipleResults[str]:
        """Stop the app and start it again on its data dir, with an order just placed
        (its events and its charge still under way) unless `token` is None."""
        order_id = None
        if token is not None:
            response = self.run(self.seams.order(user, token, items=[("mug", 1, 700)]))
            order_id = answered(response, 201).json()["id"]
            self.placed[order_id] = Placed(700, token)
        event(f"restarted with {token or 'nothing'} under way")
        self._restarted = self.loop.create_future()
        self._restart.set()
        self.seams = self.run(self._until_ready(self._restarted))
        return multiple() if order_id is None else multiple(order_id)

    # After every step.

    @invariant()
    def books_hold(self) -> None:
        self.run(self._check_books())

    def teardown(self) -> None:
        try:
            self._mend()
            if not self.broken:
                self.run(self._replay_dead_letters())
                self.run(self._check_books())
        finally:
            super().teardown()  # stops the app

    # Inside.

    async def _check_books(self) -> None:
        await self.seams.settle()
        if self._breakages:
            await self._nothing_unsafe()
            return
        letters = (await self.seams.get("/api/admin/dead-letters"))["items"]
        assert letters == [], f"dead letters with every consumer working: {letters}"
        await self.books_balance_once_quiet()

    async def _nothing_unsafe(self) -> None:
        """What must hold even while a consumer is broken and orders wait for it."""
        payments: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        for payment in await self.seams.all_pages("/api/payments"):
            payments[payment["order_id"]].append(payment)
        notes: defaultdict[str, list[str]] = defaultdict(list)
        for note in await self.seams.all_pages("/api/notifications"):
            notes[note["order_id"]].append(note["kind"])
        orders = await self.seams.all_pages("/api/orders")
        assert {o["id"] for o in orders} == set(self.placed), "orders API and accepted differ"
        assert set(payments) | set(notes) <= set(self.placed), "about an order nobody placed"

        for order in orders:
            if order["status"] in ("PAID", "REFUNDED"):  # PaymentSucceeded reached orders
                statuses = [p["status"] for p in payments[order["id"]]]
                assert statuses in (["SUCCEEDED"], ["REFUNDED"]), (order, statuses)
        for order_id, found in payments.items():
            captured = [p for p in found if p["status"] in CAPTURED]
            assert len(captured) <= 1, f"order {order_id} captured twice: {found}"
            for payment in found:
                assert payment["amount"] == self.placed[order_id].total, (order_id, payment)
        for order_id, kinds in notes.items():
            statuses = {p["status"] for p in payments[order_id]}
            story = (order_id, kinds, payments[order_id])
            assert len(kinds) == len(set(kinds)), f"told twice: {story}"
            if "payment_succeeded" in kinds:
                assert statuses & CAPTURED, f"payment received, but none captured: {story}"
            if "payment_refunded" in kinds:
                assert "REFUNDED" in statuses, f"refund notified, but none made: {story}"
            assert self.placed[order_id].token != "tok_chargeDeclined", f"declined: {story}"

        succeeded = sum(
            p["amount"] for found in payments.values() for p in found if p["status"] == "SUCCEEDED"
        )
        captured_total, refunded_total = await self._processor_ledger()
        assert captured_total - refunded_total == succeeded, (
            f"processor holds {captured_total} - {refunded_total} = "
            f"{captured_total - refunded_total}, succeeded payments total {succeeded}"
        )

    async def _until_ready(self, ready: asyncio.Future[Seams]) -> Seams:
        await asyncio.wait((ready, self._host), return_when=asyncio.FIRST_COMPLETED)
        if not ready.done():
            self._host.result()  # the app failed to stop or start again: raise why
            raise RuntimeError("the app stopped instead of restarting")
        return ready.result()

    async def _replay_dead_letters(self) -> int:
        response = await self.seams.client.post("/api/admin/dead-letters/replay")
        replayed: list[str] = answered(response, 202).json()["replayed"]
        return len(replayed)

    def _mend(self) -> None:
        while self._breakages:
            _, (owner, name, original) = self._breakages.popitem()
            setattr(owner, name, original)

    def _weak_spot(self, consumer: str) -> tuple[type, str]:
        """The store method a consumer's handlers write through."""
        if consumer == "payments":  # OrderPlaced
            return PaymentsStore, "open_payment"
        if consumer == "notifications":  # PaymentSucceeded, PaymentRefunded
            return NotificationsStore, "add_notification"
        # PaymentSucceeded, PaymentFailed, PaymentRefunded; cancels too (failing_for_handlers)
        return type(self._store_of("orders")), "update_order"

    def _store_of(self, module: str) -> Any:
        return next(m.store for m in self.seams.runtime.modules if m.module.name == module)


@pytest.mark.slow  # boots the system once per example
class TestDeliveryInvariants(DeliveryMachine.TestCase):  # type: ignore[misc,valid-type]
    settings = settings(
        max_examples=15,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
