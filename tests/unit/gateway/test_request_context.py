"""The one layer every routed request runs inside: its id, its module, its metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import TestClient
from prometheus_client import REGISTRY

from app.bus.context import current_module, current_request_id
from app.gateway.request_context import ModuleOwners, request_context
from app.gateway.request_id import add_request_id_header


@get("/api/things/{thing_id:str}", sync_to_thread=False)
def thing(thing_id: FromPath[str]) -> dict[str, Any]:
    return {"id": thing_id, "module": current_module.get(), "request": current_request_id.get()}


@get("/api/things/{thing_id:str}/broken", sync_to_thread=False)
def broken(thing_id: FromPath[str]) -> None:
    raise RuntimeError("down")


@get("/metrics", sync_to_thread=False)
def scrape() -> str:
    return "scraped"


def owner_of(path: str) -> str:
    return "things" if path.startswith("/api/things") else "gateway"


@pytest.fixture
def client() -> Iterator[TestClient[Litestar]]:
    app = Litestar(
        [thing, broken, scrape],
        middleware=[request_context(owner_of)],
        before_send=[add_request_id_header],
    )
    with TestClient(app) as client:
        yield client


def requests_counted(path: str, status: int, module: str = "things") -> float:
    labels = {
        "method": "GET",
        "path": path,
        "status_code": str(status),
        "app_name": "seams",
        "module": module,
    }
    return REGISTRY.get_sample_value("seams_requests_total", labels) or 0.0


def test_the_handler_runs_with_the_request_id_and_the_module_of_its_route(
    client: TestClient[Litestar],
) -> None:
    answer = client.get("/api/things/t1", headers={"X-Request-ID": "req-42"})

    assert answer.json() == {"id": "t1", "module": "things", "request": "req-42"}
    assert answer.headers["x-request-id"] == "req-42"


def test_requests_are_counted_per_route_template_module_and_status(
    client: TestClient[Litestar],
) -> None:
    template = "/api/things/{thing_id}"
    before = requests_counted(template, 200), requests_counted(f"{template}/broken", 500)

    client.get("/api/things/t1")
    client.get("/api/things/t2")
    client.get("/api/things/t3/broken")

    after = requests_counted(template, 200), requests_counted(f"{template}/broken", 500)
    assert (after[0] - before[0], after[1] - before[1]) == (2, 1)


def test_a_scrape_does_not_count_itself(client: TestClient[Litestar]) -> None:
    before = requests_counted("/metrics", 200, module="gateway")

    client.get("/metrics")

    assert requests_counted("/metrics", 200, module="gateway") == before


def test_module_owners_ask_once_per_prefix_and_remember_a_bounded_number() -> None:
    asked: list[str] = []

    def counting(path: str) -> str:
        asked.append(path)
        return owner_of(path)

    owners = ModuleOwners(counting, size=2)
    found = [owners.of(path) for path in ("/api/things/1", "/api/things/2", "/health")]
    for number in range(5):
        owners.of(f"/api/prefix{number}/x")  # more prefixes than it keeps
    owners.of("/api/prefix0/y")

    assert found == ["things", "things", "gateway"]
    assert asked[:2] == ["/api/things/1", "/health"]  # /api/things/2: remembered
    assert asked[-1] == "/api/prefix0/y"  # beyond the bound: asked again, not remembered
