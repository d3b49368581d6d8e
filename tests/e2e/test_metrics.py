"""GET /metrics after a flow shows the counts the flow caused."""

from __future__ import annotations

import re
from typing import Any, cast

import httpx
import pytest

from app.kernel.settings import Settings, SettingsError
from tests.support.seams import Seams, fast_settings, running

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


def scraper(seams: Seams, address: str) -> httpx.AsyncClient:
    """A client of the same app that connects from `address`."""
    transport = httpx.ASGITransport(app=cast(Any, seams.app), client=(address, 40_000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver.local")


async def test_metrics_answer_loopback_scrapers_and_refuse_others_by_default() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        async with scraper(seams, "127.0.0.1") as local, scraper(seams, "::1") as local6:
            allowed = [(await local.get("/metrics")).status_code,
                       (await local6.get("/metrics")).status_code]  # fmt: skip
        async with scraper(seams, "203.0.113.9") as outsider:
            refused = await outsider.get("/metrics")
            health = await outsider.get("/health")

    assert allowed == [200, 200]
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "APP_METRICS_ALLOW" in refused.json()["detail"]
    assert "seams_" not in refused.text
    assert health.status_code == 200  # only the metrics are kept in


async def test_metrics_answer_the_scrapers_app_metrics_allow_names() -> None:
    settings = fast_settings(ephemeral="true", metrics_allow="10.0.0.0/8, 192.0.2.5")
    async with running(settings) as seams:
        statuses = {}
        for address in ("10.1.2.3", "192.0.2.5", "192.0.2.6", "127.0.0.1"):
            async with scraper(seams, address) as client:
                statuses[address] = (await client.get("/metrics")).status_code

    assert statuses == {"10.1.2.3": 200, "192.0.2.5": 200, "192.0.2.6": 403, "127.0.0.1": 403}


def test_a_malformed_metrics_allow_list_is_refused_at_startup() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"APP_METRICS_ALLOW": "10.0.0.0/8,prometheus.local"})

    assert "APP_METRICS_ALLOW" in str(refused.value)
    assert "prometheus.local" in str(refused.value)
