"""The notifications module, booted alone with users through the real composition root.

Payment events are fed straight to the transport, as the payments module would publish them.

The app runs on the test's own event loop (httpx's ASGI transport and the app's lifespan):
Litestar 2's AsyncTestClient runs the app on a portal thread with a second loop, so handlers
fed from the test would run on another loop than the app's, and `wait_quiet` from the test
would wait on an asyncio.Event set from the other thread (litestar-org/litestar#1920).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import pytest

from app.bus import Event
from app.bus.envelope import Envelope, wrap
from app.kernel.ids import new_id
from app.main import create_app
from app.modules.notifications.module import module as notifications_module
from app.modules.notifications.money import format_amount
from app.modules.notifications.store import NotificationsStore
from app.modules.payments.contracts import PaymentRefunded, PaymentSucceeded
from app.modules.users.contracts import UserRegistered, UserUpdated
from app.modules.users.module import module as users_module
from app.runtime import Runtime
from app.settings import Settings


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class System:
    """Users and notifications behind the gateway, and the runtime to feed events in."""

    def __init__(self, http: httpx.AsyncClient, runtime: Runtime) -> None:
        self.http = http
        self.runtime = runtime


@asynccontextmanager
async def running(**settings: Any) -> AsyncIterator[System]:
    app = create_app(
        Settings(
            ephemeral=True,
            password_hashing="argon2id-fast",
            bus_retry_base_seconds=0.001,
            **settings,
        ),
        modules=[users_module, notifications_module],
    )
    # Litestar types its ASGI callable more narrowly than httpx's generic ASGI signature.
    transport = httpx.ASGITransport(app=cast(Any, app))
    async with (
        app.lifespan(),
        httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as http,
    ):
        yield System(http, app.state.runtime)


@pytest.fixture
async def system(anyio_backend: str) -> AsyncIterator[System]:
    async with running() as system:
        yield system


async def register(system: System, email: str = "ada@example.com") -> str:
    response = await system.http.post(
        "/api/users", json={"name": "Ada", "email": email, "password": "correct horse"}
    )
    assert response.status_code == 201, response.text
    await system.runtime.bus.wait_quiet(5)
    user_id: str = response.json()["id"]
    return user_id


async def change_email(system: System, user_id: str, email: str) -> None:
    response = await system.http.patch(f"/api/users/{user_id}", json={"email": email})
    assert response.status_code == 200, response.text
    await system.runtime.bus.wait_quiet(5)


def envelope_of(event: Event, *, producer: str, aggregate_id: str, sequence: int = 1) -> Envelope:
    return wrap(
        event,
        producer=producer,
        aggregate_id=aggregate_id,
        sequence=sequence,
        correlation_id="c1",
        causation_id=None,
    )


def payment_succeeded(
    user_id: str, order_id: str, *, amount: int = 1250, currency: str = "EUR"
) -> Envelope:
    payment_id = new_id()
    event = PaymentSucceeded(
        payment_id=payment_id, order_id=order_id, user_id=user_id, amount=amount, currency=currency
    )
    return envelope_of(event, producer="payments", aggregate_id=payment_id)


async def deliver(system: System, envelope: Envelope) -> None:
    await system.runtime.bus.transport.publish(envelope)
    await system.runtime.bus.wait_quiet(5)


async def listed(system: System, **query: Any) -> dict[str, Any]:
    response = await system.http.get("/api/notifications", params=query)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


class LogWatch(logging.Handler):
    """Sets an asyncio.Event when a log record containing `fragment` is emitted."""

    def __init__(self, fragment: str) -> None:
        super().__init__(logging.DEBUG)
        self.fragment = fragment
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.fragment in record.getMessage():
            self.seen.set()


@pytest.mark.anyio
async def test_payment_succeeded_records_one_email_to_the_users_address(
    system: System, caplog: pytest.LogCaptureFixture
) -> None:
    user_id = await register(system, "ada@example.com")
    order_id = new_id()

    with caplog.at_level(logging.INFO, logger="app.modules.notifications"):
        await deliver(system, payment_succeeded(user_id, order_id, amount=1250, currency="EUR"))

    [notification] = (await listed(system))["items"]
    assert notification["user_id"] == user_id
    assert notification["order_id"] == order_id
    assert notification["kind"] == "payment_succeeded"
    assert notification["channel"] == "email"
    assert notification["to"] == "ada@example.com"
    assert "12.50 EUR" in notification["body"]
    sent = [r.getMessage() for r in caplog.records if r.name == "app.modules.notifications"]
    assert sent == [f"email to ada@example.com: {notification['subject']}"]


@pytest.mark.anyio
async def test_payment_refunded_records_a_refund_notification(system: System) -> None:
    user_id = await register(system)
    order_id, payment_id = new_id(), new_id()
    refunded = PaymentRefunded(
        payment_id=payment_id, order_id=order_id, user_id=user_id, amount=1250, currency="JPY"
    )

    await deliver(system, envelope_of(refunded, producer="payments", aggregate_id=payment_id))

    [notification] = (await listed(system))["items"]
    assert notification["kind"] == "payment_refunded"
    assert notification["order_id"] == order_id
    assert "1250 JPY" in notification["body"]


@pytest.mark.anyio
async def test_duplicate_delivery_records_one_notification(system: System) -> None:
    user_id = await register(system)
    envelope = payment_succeeded(user_id, new_id())

    await deliver(system, envelope)
    await deliver(system, envelope)

    assert len((await listed(system))["items"]) == 1


@pytest.mark.anyio
async def test_second_event_of_the_same_kind_for_an_order_records_nothing_new(
    system: System,
) -> None:
    user_id = await register(system)
    order_id = new_id()

    await deliver(system, payment_succeeded(user_id, order_id))
    await deliver(system, payment_succeeded(user_id, order_id))

    assert len((await listed(system))["items"]) == 1
    assert await system.runtime.bus.store.count_dead_letters() == 0


@pytest.mark.anyio
async def test_newer_user_update_changes_the_address_of_the_next_notification(
    system: System,
) -> None:
    user_id = await register(system, "old@example.com")

    await change_email(system, user_id, "new@example.com")
    await deliver(system, payment_succeeded(user_id, new_id()))

    [notification] = (await listed(system))["items"]
    assert notification["to"] == "new@example.com"


@pytest.mark.anyio
async def test_stale_user_update_does_not_overwrite_a_newer_address(system: System) -> None:
    user_id = await register(system, "old@example.com")
    await change_email(system, user_id, "new@example.com")  # UserUpdated, sequence 2
    stale = UserUpdated(user_id=user_id, name="Ada", email="stale@example.com")

    await deliver(system, envelope_of(stale, producer="users", aggregate_id=user_id, sequence=1))
    await deliver(system, payment_succeeded(user_id, new_id()))

    [notification] = (await listed(system))["items"]
    assert notification["to"] == "new@example.com"


@pytest.mark.anyio
async def test_payment_for_a_contact_not_yet_known_is_retried_then_recorded(
    anyio_backend: str,
) -> None:
    # Enough attempts that the retries outlast the contact's arrival by a wide margin.
    async with running(bus_max_attempts=50, bus_retry_max_seconds=0.05) as system:
        bus = system.runtime.bus
        user_id = new_id()
        first_failure = LogWatch("handler notifications failed on PaymentSucceeded")
        logging.getLogger("app.bus").addHandler(first_failure)
        try:
            payment = asyncio.create_task(
                bus.transport.publish(payment_succeeded(user_id, new_id()))
            )
            await asyncio.wait_for(first_failure.seen.wait(), 5)
        finally:
            logging.getLogger("app.bus").removeHandler(first_failure)
        registered = UserRegistered(
            user_id=user_id,
            name="Late",
            email="late@example.com",
            registered_at="2025-01-01T00:00:00Z",
        )

        await deliver(system, envelope_of(registered, producer="users", aggregate_id=user_id))
        await asyncio.wait_for(payment, 5)
        await bus.wait_quiet(5)

        [notification] = (await listed(system))["items"]
        assert notification["to"] == "late@example.com"
        assert bus.stats[("PaymentSucceeded", "notifications", "retried")] >= 1
        assert bus.stats[("PaymentSucceeded", "notifications", "handled")] == 1
        assert await bus.store.count_dead_letters() == 0


@pytest.mark.anyio
async def test_list_filters_by_user_and_order_and_pages_with_cursor(system: System) -> None:
    ada = await register(system, "ada@example.com")
    bob = await register(system, "bob@example.com")
    ada_orders = [new_id() for _ in range(3)]
    for order_id in ada_orders:
        await deliver(system, payment_succeeded(ada, order_id))
    await deliver(system, payment_succeeded(bob, new_id()))

    first = await listed(system, user_id=ada, limit=2)
    second = await listed(system, user_id=ada, limit=2, cursor=first["next_cursor"])
    by_order = await listed(system, order_id=ada_orders[1])
    bobs = await listed(system, user_id=bob)

    assert [n["order_id"] for n in first["items"] + second["items"]] == ada_orders
    assert first["next_cursor"] == first["items"][-1]["id"]
    assert second["next_cursor"] is None
    assert [n["order_id"] for n in by_order["items"]] == [ada_orders[1]]
    assert [n["to"] for n in bobs["items"]] == ["bob@example.com"]


@pytest.mark.anyio
async def test_get_notification_answers_the_one_listed(system: System) -> None:
    user_id = await register(system)
    await deliver(system, payment_succeeded(user_id, new_id()))
    [listed_one] = (await listed(system))["items"]

    response = await system.http.get(f"/api/notifications/{listed_one['id']}")

    assert response.status_code == 200
    assert response.json() == listed_one


@pytest.mark.anyio
async def test_unknown_notification_is_a_404_problem(system: System) -> None:
    response = await system.http.get(f"/api/notifications/{new_id()}")

    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 404


@pytest.mark.anyio
async def test_a_filter_longer_than_64_characters_is_refused(system: System) -> None:
    response = await system.http.get("/api/notifications", params={"user_id": "u" * 65})

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")


@pytest.mark.anyio
async def test_the_inbox_claims_an_envelope_once_and_a_failure_undoes_the_claim(
    anyio_backend: str,
) -> None:
    store = NotificationsStore("sqlite+aiosqlite:///:memory:")
    await store.open()
    envelope = payment_succeeded(new_id(), new_id())
    try:
        with pytest.raises(RuntimeError):
            async with store.handling(envelope) as handling:
                assert handling is not None
                raise RuntimeError("the effect failed")
        async with store.handling(envelope) as handling:
            assert handling is not None  # the failed attempt left no claim behind
        async with store.handling(envelope) as handling:
            assert handling is None  # handled: a redelivery does nothing
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("amount", "currency", "written"),
    [
        (1250, "EUR", "12.50 EUR"),
        (5, "usd", "0.05 USD"),
        (1250, "JPY", "1250 JPY"),
        (1250, "KWD", "1.250 KWD"),
        (0, "EUR", "0.00 EUR"),
    ],
)
def test_amounts_are_written_with_the_currencys_minor_unit(
    amount: int, currency: str, written: str
) -> None:
    assert format_amount(amount, currency) == written
