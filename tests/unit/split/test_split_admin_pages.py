"""The split gateway's dead-letter pages over several module processes: each letter once, in
id order, across pages, named after a process that runs its consumer, even where processes
share one bus store; a process that cannot be reached is named, never a 500. The module
processes are answered by an httpx mock transport, as their /api/admin/dead-letters would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.middleware import ASGIMiddleware
from litestar.testing import TestClient
from litestar.types import ASGIApp, Receive, Scope, Send

from app.gateway.errors import EXCEPTION_HANDLERS
from app.kernel.identity import Caller
from app.split.admin import SPLIT_ADMIN_ROUTES, Fleet
from app.split.discovery import Instance
from app.split.proof import HEADER, GatewayProof

SECRET = "unit-test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz"
NOTIFICATIONS = Instance(("notifications",), "n1", "http://10.0.0.4:8104", 4)
ORDERS = Instance(("orders",), "o1", "http://10.0.0.2:8102", 2)  # shares notifications' store
PAYMENTS = Instance(("payments",), "p1", "http://10.0.0.3:8103", 3)  # a store of its own
GONE = Instance(("payments",), "p2", "http://10.0.0.9:8105", 9)


def letter(letter_id: str, consumer: str) -> dict[str, Any]:
    return {
        "id": letter_id,
        "consumer": consumer,
        "event_type": "PaymentSucceeded",
        "aggregate_id": f"agg-{letter_id}",
        "error": "RuntimeError('broken')",
        "attempts": 10,
        "failed_at": "2026-12-01T18:00:00Z",
        "envelope": {
            "id": f"ev-{letter_id}",
            "type": "PaymentSucceeded",
            "version": 1,
            "occurred_at": "2026-12-01T18:00:00Z",
            "producer": "payments",
            "aggregate_id": f"agg-{letter_id}",
            "sequence": 1,
            "correlation_id": "req-1",
            "payload": {},
        },
    }


SHARED_STORE = [letter(i, "notifications") for i in ("a1", "a3", "a5", "a7")]
PAYMENTS_STORE = [letter(i, "payments") for i in ("a2", "a4", "a6")]
STORES = {
    NOTIFICATIONS.url: SHARED_STORE,
    ORDERS.url: SHARED_STORE,
    PAYMENTS.url: PAYMENTS_STORE,
}


def module_process(request: httpx.Request) -> httpx.Response:
    """A module process's /api/admin/dead-letters: its store's letters after the cursor,
    `limit` of them and a next cursor when there are more (as app.kernel.pages does)."""
    base = f"{request.url.scheme}://{request.url.host}:{request.url.port}"
    if base == GONE.url:
        raise httpx.ConnectError("connection refused", request=request)
    assert HEADER in request.headers  # every question carries the gateway's proof
    letters = STORES[base]
    if request.url.path != "/api/admin/dead-letters":
        wanted = request.url.path.rsplit("/", 1)[-1]
        found = [one for one in letters if one["id"] == wanted]
        return httpx.Response(200, json=found[0]) if found else httpx.Response(404, json={})
    limit = int(request.url.params["limit"])
    cursor = request.url.params.get("cursor")
    after = [one for one in letters if cursor is None or one["id"] > cursor][: limit + 1]
    more = len(after) > limit
    kept = after[:limit]
    return httpx.Response(
        200, json={"items": kept, "next_cursor": kept[-1]["id"] if more else None}
    )


class Live:
    def __init__(self, instances: list[Instance]) -> None:
        self.instances = instances

    def live(self, module: str | None = None) -> list[Instance]:
        return list(self.instances)


class AnAdmin(ASGIMiddleware):
    """What the gateway's identity middleware leaves for an admin's token."""

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        scope["user"] = Caller(id="admin-1", role="admin")
        await next_app(scope, receive, send)


def gateway(instances: list[Instance]) -> Litestar:
    client = httpx.AsyncClient(transport=httpx.MockTransport(module_process))
    app = Litestar(
        route_handlers=SPLIT_ADMIN_ROUTES,
        middleware=[AnAdmin()],
        exception_handlers=EXCEPTION_HANDLERS,  # problem+json, as the gateway's front door
    )
    app.state.admin_fleet = Fleet(Live(instances), GatewayProof(SECRET), client=client)
    return app


@pytest.fixture
def client() -> Iterator[TestClient[Litestar]]:
    with TestClient(gateway([NOTIFICATIONS, ORDERS, PAYMENTS, GONE])) as test_client:
        yield test_client


@pytest.mark.parametrize("limit", [1, 2, 3, 50])
def test_pages_list_every_letter_once_in_id_order(client: TestClient[Litestar], limit: int) -> None:
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(20):
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        answer = client.get("/api/admin/dead-letters", params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        assert len(page["items"]) <= limit
        assert page["unreachable"] == ["payments@10.0.0.9:8105"]
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [one["id"] for one in seen] == ["a1", "a2", "a3", "a4", "a5", "a6", "a7"]
    assert all(one["replayable"] for one in seen)
    # A letter of the shared store is named after the process that runs its consumer.
    assert {one["id"]: one["process"] for one in seen} == {
        "a1": "notifications@10.0.0.4:8104",
        "a2": "payments@10.0.0.3:8103",
        "a3": "notifications@10.0.0.4:8104",
        "a4": "payments@10.0.0.3:8103",
        "a5": "notifications@10.0.0.4:8104",
        "a6": "payments@10.0.0.3:8103",
        "a7": "notifications@10.0.0.4:8104",
    }


def test_one_letter_is_found_in_the_process_that_holds_it(client: TestClient[Litestar]) -> None:
    found = client.get("/api/admin/dead-letters/a4")
    assert found.status_code == 200, found.text
    assert found.json()["process"] == "payments@10.0.0.3:8103"


def test_a_letter_no_process_holds_is_503_while_one_is_unreachable() -> None:
    with TestClient(gateway([NOTIFICATIONS, GONE])) as test_client:
        missing = test_client.get("/api/admin/dead-letters/zz")
    assert missing.status_code == 503, missing.text
    assert "payments@10.0.0.9:8105" in missing.json()["detail"]
    assert missing.headers["retry-after"] == "1"


def test_a_letter_no_process_holds_is_404_when_all_answered() -> None:
    with TestClient(gateway([NOTIFICATIONS, PAYMENTS])) as test_client:
        missing = test_client.get("/api/admin/dead-letters/zz")
    assert missing.status_code == 404, missing.text


def test_a_letter_whose_consumer_runs_nowhere_is_listed_but_not_replayed() -> None:
    with TestClient(gateway([ORDERS])) as test_client:
        listed = test_client.get("/api/admin/dead-letters").json()
        found = test_client.get("/api/admin/dead-letters/a1")
        replay = test_client.post("/api/admin/dead-letters/a1/replay")
    assert [one["process"] for one in listed["items"]] == ["orders@10.0.0.2:8102"] * 4
    assert [one["replayable"] for one in listed["items"]] == [False] * 4
    assert found.status_code == 200, found.text
    assert replay.status_code == 503, replay.text
    assert "runs in no live process" in replay.json()["detail"]
