"""Paths under a module's prefix that the gateway answers itself (a journey, an export): one
predicate for the request's module (logs, metrics), the topology and the split's forwarding."""

from __future__ import annotations

import pytest

from app.gateway.export import served_by_gateway
from app.gateway.request_context import ModuleOwners


@pytest.mark.parametrize("path", ["/api/orders/o1/journey", "/api/users/u1/export"])
def test_a_journey_and_an_export_are_the_gateways(path: str) -> None:
    assert served_by_gateway(path)
    assert ModuleOwners(lambda _: "a module").of(path) == "gateway"


@pytest.mark.parametrize(
    "path",
    [
        "/api/orders/o1",
        "/api/orders/o1/cancel",
        "/api/orders/o1/items/journey",  # deeper: the module's own
        "/api/journey",
        "/other/orders/o1/export",
    ],
)
def test_the_rest_is_the_modules(path: str) -> None:
    assert not served_by_gateway(path)
    assert ModuleOwners(lambda _: "orders").of(path) == "orders"
