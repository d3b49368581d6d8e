"""The payments module spec: what it publishes and consumes, how it is built."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar.di import Provide

from app.bus import RetryPolicy
from app.modules.orders.contracts import OrderCancelled, OrderPlaced
from app.modules.payments.api import PaymentsController
from app.modules.payments.contracts import PaymentFailed, PaymentRefunded, PaymentSucceeded
from app.modules.payments.processor import CardProcessor, ProcessorFaults
from app.modules.payments.service import PaymentService
from app.modules.payments.store import PaymentsStore
from app.modules.payments.views import CancelledOrder, PlacedOrder
from app.modules.spec import (
    Assembly,
    FaultSwitch,
    Module,
    ModuleContext,
    Seconds,
    SwitchKind,
    SwitchValue,
    UserData,
)


class PaymentsSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Its settings section (APP_PAYMENT_MAX_ATTEMPTS, …)."""

    payment_max_attempts: Annotated[int, msgspec.Meta(ge=1, le=100)] = 5
    payment_retry_base_seconds: Seconds = 0.1
    payment_retry_max_seconds: Seconds = 5.0
    slow_card_seconds: Seconds = 0.25
    # Charges one payments process has at the card processor at once; more wait their turn.
    processor_concurrency: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 8


def assemble(context: ModuleContext) -> Assembly:
    store: PaymentsStore = context.store
    settings: PaymentsSettings = context.section
    faults = ProcessorFaults()
    service = PaymentService(
        store,
        context.bus,
        CardProcessor(
            store,
            slow_seconds=settings.slow_card_seconds,
            concurrency=settings.processor_concurrency,
            faults=faults,
        ),
        RetryPolicy(
            max_attempts=settings.payment_max_attempts,
            base_delay=settings.payment_retry_base_seconds,
            max_delay=settings.payment_retry_max_seconds,
        ),
        orphaned_after=orphaned_after(
            settings.slow_card_seconds, settings.payment_retry_max_seconds
        ),
    )
    return Assembly(
        route_handlers=[PaymentsController],
        dependencies={"payments": Provide(lambda: service, use_cache=True, sync_to_thread=False)},
        handlers={
            PlacedOrder: service.on_order_placed,
            CancelledOrder: service.on_order_cancelled,
        },
        outbox=store.outbox,
        purge=store.purge,
        on_start=[service.resume],
        on_stop=[service.stop],
        switches=fault_switches(faults),
    )


def fault_switches(faults: ProcessorFaults) -> list[FaultSwitch]:
    """The card processor's faults, as switches a learner turns on in development."""
    return [
        _processor_switch(
            faults,
            "decline_rate",
            name="decline_rate",
            label="Card declines",
            explain="The share of cards the processor declines: a real shop sees the payment "
            "fail and cancels the order (the compensation), and no money is taken.",
            kind=SwitchKind.RATE,
        ),
        _processor_switch(
            faults,
            "transient_rate",
            name="transient_rate",
            label="Processor errors",
            explain="The share of authorisations that fail with a transient processing error: "
            "payments retries with backoff and the order is paid late, or cancelled after "
            "APP_PAYMENT_MAX_ATTEMPTS failures.",
            kind=SwitchKind.RATE,
        ),
        _processor_switch(
            faults,
            "slow_seconds",
            name="slow_card_seconds",
            label="Slow card network",
            explain="Every authorisation waits this long: orders stay PENDING longer, charges "
            "queue for the processor's few connections, and a cancel meanwhile voids the "
            "charge before any money moves.",
            kind=SwitchKind.SECONDS,
        ),
    ]


def _processor_switch(
    faults: ProcessorFaults, field: str, *, name: str, label: str, explain: str, kind: SwitchKind
) -> FaultSwitch:
    """A switch that reads and writes one of the processor's fault fields."""

    async def read() -> SwitchValue:
        value: float = getattr(faults, field)
        return value

    async def write(value: SwitchValue) -> None:
        setattr(faults, field, float(value))

    return FaultSwitch(name=name, label=label, explain=explain, kind=kind, read=read, write=write)


def orphaned_after(slow_card_seconds: float, retry_max_seconds: float) -> float:
    """How long a live charge may leave its payment unwritten, with room to spare: between
    two writes it waits for at most one retry delay and one slow card."""
    return 2 * (slow_card_seconds + retry_max_seconds) + 5.0


module = Module(
    name="payments",
    description="Charges and refunds through the simulated card processor (SQL, its own database).",
    publishes=(PaymentSucceeded, PaymentFailed, PaymentRefunded),
    subscribes=(OrderPlaced, OrderCancelled),
    reads=(PlacedOrder, CancelledOrder),
    open_store=PaymentsStore,
    assemble=assemble,
    user_data=(UserData("?user_id={user_id}"),),
    settings=PaymentsSettings,
)
