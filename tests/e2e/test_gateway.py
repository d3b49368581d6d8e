"""The gateway as the single entry point: routes, docs, health and readiness."""

from __future__ import annotations

import logging

import pytest

from app.logs import ContextFilter
from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio

GATEWAY_PREFIXES = (
    "/health",
    "/ready",
    "/metrics",
    "/api/topology",
    "/api/admin/",
    "/api/watch/",
    "/api/benchmarks",
)


def owned_by_gateway(path: str) -> bool:
    """The gateway's own routes, and the journeys it answers under modules' prefixes."""
    return path.startswith(GATEWAY_PREFIXES) or path.endswith("/{aggregate_id}/journey")


async def test_every_api_route_lives_under_its_module(seams: Seams) -> None:
    spec = (await seams.client.get("/schema/openapi.json")).json()
    modules = {running.module.name for running in seams.runtime.modules}
    prefixes = {
        prefix: running.module.name
        for running in seams.runtime.modules
        for prefix in (running.module.name, *running.module.also_serves)
    }
    for path in spec["paths"]:
        if owned_by_gateway(path):
            continue
        assert path.startswith("/api/") and path.split("/")[2] in prefixes, path
    served = {prefixes[p.split("/")[2]] for p in spec["paths"] if not owned_by_gateway(p)}
    assert served == modules
    # docs/decisions/0003-route-ownership.md: users owns credentials
    assert prefixes["auth"] == "users"


async def test_docs_are_served_at_schema() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        page = await seams.client.get("/schema")
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]


async def test_health_and_ready_answer_when_everything_runs(seams: Seams) -> None:
    assert (await seams.client.get("/health")).json() == {"status": "ok"}
    ready = await seams.client.get("/ready")
    assert ready.status_code == 200
    assert set(ready.json()["checks"].values()) == {"ok"}


async def test_ready_is_503_and_names_a_store_that_stopped_answering() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        orders = next(m for m in seams.runtime.modules if m.module.name == "orders")
        await orders.store.close()

        ready = await seams.client.get("/ready")

        assert ready.status_code == 503
        assert ready.headers["content-type"].startswith("application/problem+json")
        body = ready.json()
        assert "orders.store" in body["detail"]
        assert body["checks"]["orders.store"].startswith("failing")
        assert body["checks"]["users.store"] == "ok"
        await orders.store.open()  # so the app can stop cleanly


async def test_ready_is_503_when_the_bus_is_stopped() -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        await seams.runtime.bus.transport.stop()
        ready = await seams.client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["bus"] == "not running"
        await seams.runtime.bus.transport.start()


async def test_the_request_id_is_logged_with_the_request(caplog: pytest.LogCaptureFixture) -> None:
    caplog.handler.addFilter(ContextFilter())
    caplog.set_level(logging.INFO, logger="app.access")
    async with running(fast_settings(ephemeral="true")) as seams:
        response = await seams.client.get("/api/orders", headers={"X-Request-ID": "look-for-me"})
    assert response.headers["x-request-id"] == "look-for-me"
    [line] = [r for r in caplog.records if r.name == "app.access" and "/api/orders" in r.message]
    assert line.request_id == "look-for-me"  # type: ignore[attr-defined]
    assert line.getMessage() == "GET /api/orders 200"
