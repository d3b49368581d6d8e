"""GET /metrics after a flow shows the counts the flow caused."""

from __future__ import annotations

import re

import pytest

from tests.support.seams import Seams

pytestmark = pytest.mark.anyio


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in Prometheus' text format (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def metrics(seams: Seams) -> str:
    response = await seams.client.get("/metrics", headers={"Authorization": ""})
    assert response.status_code == 200
    return response.text


async def test_metrics_count_what_an_order_flow_caused(seams: Seams) -> None:
    before = await metrics(seams)
    user = await seams.register("Mia")
    await seams.place(user, "tok_visa")
    await seams.place(user, "tok_chargeDeclined")
    await seams.settle()
    after = await metrics(seams)

    def grew(name: str, by: float, **labels: str) -> None:
        assert sample(after, name, **labels) - sample(before, name, **labels) == by, (name, labels)

    grew("seams_events_total", 2, type="OrderPlaced", consumer="payments", outcome="handled")
    grew(
        "seams_events_total",
        1,
        type="PaymentSucceeded",
        consumer="notifications",
        outcome="handled",
    )
    grew("seams_events_total", 1, type="PaymentFailed", consumer="orders", outcome="handled")
    grew("seams_events_published_total", 2, type="OrderPlaced", producer="orders")
    grew("seams_handler_seconds_count", 2, type="OrderPlaced", consumer="payments")
    grew(
        "seams_requests_total",
        2,
        method="POST",
        path="/api/orders",
        module="orders",
        status_code="201",
    )
    grew(
        "seams_requests_total",
        1,
        method="POST",
        path="/api/auth/token",
        module="users",
        status_code="200",
    )
    grew("seams_outbox_backlog", 0, producer="orders")


async def test_a_retry_and_a_dead_letter_are_counted(
    seams: Seams, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.modules.payments.store import PaymentsStore

    async def broken(*_: object, **__: object) -> bool:
        raise RuntimeError("down")

    monkeypatch.setattr(PaymentsStore, "open_payment", broken)
    before = await metrics(seams)
    user = await seams.register("Ned")
    await seams.place(user, "tok_visa")
    await seams.settle()
    after = await metrics(seams)
    attempts = seams.runtime.settings.bus_max_attempts
    for outcome, count in (("failed", attempts), ("retried", attempts - 1), ("dead_lettered", 1)):
        labels = {"type": "OrderPlaced", "consumer": "payments", "outcome": outcome}
        assert (
            sample(after, "seams_events_total", **labels)
            - sample(before, "seams_events_total", **labels)
            == count
        )
