"""/api/admin through the split gateway (issue 15, point 4): the dead letters, bus and fault
switches of every module process and replica in one place, and a process that does not
answer named instead of failing the call; every handled-event log line in a module process
carries the request id of the request that started the flow."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from app.kernel.identity import Caller
from app.split.proof import GatewayProof
from tests.support.split import SECRET, Running, Split, split_system

pytestmark = [pytest.mark.anyio, pytest.mark.services, pytest.mark.split, pytest.mark.slow]

ADMIN = "/api/admin"
FAULTS = f"{ADMIN}/faults"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def split(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Split]:
    # INFO in JSON: the consumers' "handled" lines, with both ids, are what the log test reads.
    async with split_system(
        tmp_path_factory.mktemp("split-admin"),
        replicas={"payments": 2},
        APP_LOG_LEVEL="INFO",
        APP_LOG_FORMAT="json",
    ) as system:
        yield system


def named(split: Split, name: str) -> str:
    """How the gateway names a process of the test's plan: its modules and its address."""
    running = split.processes[name]
    return f"{name.partition('.')[0]}@{urlsplit(running.url).netloc}"


def about(letters: list[dict[str, Any]], order_ids: set[str]) -> list[dict[str, Any]]:
    """The dead letters of events about these orders (a payment's event names its order)."""
    return [d for d in letters if d["envelope"]["payload"].get("order_id") in order_ids]


async def test_a_dead_letter_in_a_module_process_is_listed_and_replayed_through_the_gateway(
    split: Split,
) -> None:
    user = await split.register("Bo")
    await split.settle()  # its UserRegistered reached notifications before the break
    broken = await split.client.put(f"{FAULTS}/break:notifications", json={"value": True})
    assert broken.status_code == 200, broken.text
    assert broken.json()["processes"] == [named(split, "notifications")]
    assert broken.json()["value"] is True

    order = await split.place(user, "tok_visa")
    await split.settle()
    page = await split.get(f"{ADMIN}/dead-letters")
    assert page["unreachable"] == []
    letters = about(page["items"], {order["id"]})
    assert [(d["consumer"], d["event_type"], d["process"]) for d in letters] == [
        ("notifications", "PaymentSucceeded", named(split, "notifications"))
    ]
    one = await split.get(f"{ADMIN}/dead-letters/{letters[0]['id']}")
    assert (one["id"], one["process"], one["replayable"]) == (
        letters[0]["id"],
        named(split, "notifications"),
        True,
    )
    bus = await split.get(f"{ADMIN}/bus")
    assert bus["dead_letters"] == len(page["items"])
    assert sorted(p["process"] for p in bus["processes"]) == sorted(
        named(split, name) for name in split.processes if name != "gateway"
    )
    assert await split.all_pages("/api/notifications", order_id=order["id"]) == []

    mended = await split.client.put(f"{FAULTS}/break:notifications", json={"value": False})
    assert mended.json()["value"] is False
    replay = await split.client.post(f"{ADMIN}/dead-letters/{letters[0]['id']}/replay")
    assert replay.status_code == 202, replay.text
    assert replay.json()["replayed"] == [letters[0]["id"]]
    await split.settle()

    notes = await split.all_pages("/api/notifications", order_id=order["id"])
    assert [n["kind"] for n in notes] == ["payment_succeeded"]
    assert (await split.get(f"/api/orders/{order['id']}"))["status"] == "PAID"
    remaining = (await split.get(f"{ADMIN}/dead-letters"))["items"]
    assert letters[0]["id"] not in [d["id"] for d in remaining]
    again = await split.client.post(f"{ADMIN}/dead-letters/{letters[0]['id']}/replay")
    assert again.status_code == 404, again.text


async def test_discard_and_replay_all_reach_the_process_that_holds_each_letter(
    split: Split,
) -> None:
    user = await split.register("Cy")
    await split.settle()
    await split.client.put(f"{FAULTS}/break:notifications", json={"value": True})
    orders = [await split.place(user, "tok_visa") for _ in range(3)]
    await split.settle()
    await split.client.put(f"{FAULTS}/break:notifications", json={"value": False})
    ours = {o["id"] for o in orders}
    letters = about(await split.all_pages(f"{ADMIN}/dead-letters"), ours)
    assert len(letters) == 3, letters

    discarded = await split.client.delete(f"{ADMIN}/dead-letters/{letters[0]['id']}")
    assert discarded.status_code == 204, discarded.text
    replayed = await split.client.post(f"{ADMIN}/dead-letters/replay")
    assert replayed.status_code == 202, replayed.text
    assert {d["id"] for d in letters[1:]} <= set(replayed.json()["replayed"])
    assert replayed.json()["unreachable"] == []
    await split.settle()

    noted = {
        o["id"]: len(await split.all_pages("/api/notifications", order_id=o["id"])) for o in orders
    }
    assert noted == {
        letters[0]["envelope"]["payload"]["order_id"]: 0,
        letters[1]["envelope"]["payload"]["order_id"]: 1,
        letters[2]["envelope"]["payload"]["order_id"]: 1,
    }


async def test_a_payments_switch_is_set_in_every_replica_and_reset_everywhere(
    split: Split,
) -> None:
    replicas = sorted([named(split, "payments.1"), named(split, "payments.2")])
    switches = {s["name"]: s for s in await split.get(f"{FAULTS}")}
    assert switches["decline_rate"]["processes"] == replicas
    assert switches["pause:payments"]["processes"] == replicas
    assert switches["break:notifications"]["processes"] == [named(split, "notifications")]

    set_ = await split.client.put(f"{FAULTS}/decline_rate", json={"value": 0.5})
    assert set_.status_code == 200, set_.text
    assert (set_.json()["value"], set_.json()["processes"]) == (0.5, replicas)
    for replica in ("payments.1", "payments.2"):  # each replica's own switch, asked directly
        assert await switch_in(split, split.processes[replica], "decline_rate") == 0.5

    wrong = await split.client.put(f"{FAULTS}/decline_rate", json={"value": 2})
    assert wrong.status_code == 400, wrong.text
    assert wrong.headers["content-type"].startswith("application/problem+json")
    unknown = await split.client.put(f"{FAULTS}/no_such_switch", json={"value": True})
    assert unknown.status_code == 404, unknown.text

    reset = await split.client.delete(FAULTS)
    assert reset.status_code == 204, reset.text
    for replica in ("payments.1", "payments.2"):
        assert await switch_in(split, split.processes[replica], "decline_rate") == 0.0


async def switch_in(split: Split, running: Running, name: str) -> object:
    """A switch's value in one module process, asked with an admin's proof (not through
    the gateway)."""
    proof = GatewayProof(SECRET).issue(
        caller=Caller(id="test-admin", role="admin"), method="GET", path=FAULTS, client_host=None
    )
    async with httpx.AsyncClient(base_url=running.url, timeout=5) as client:
        answer = await client.get(FAULTS, headers={"x-seams-gateway-proof": proof})
    assert answer.status_code == 200, answer.text
    return next(s["value"] for s in answer.json() if s["name"] == name)


async def test_only_admins_reach_the_admin_routes_through_the_gateway(split: Split) -> None:
    user = await split.register("Di")
    for path in (f"{ADMIN}/dead-letters", f"{ADMIN}/bus", FAULTS):
        as_user = await split.client.get(path, headers=user["headers"])
        anonymous = await split.client.get(path, headers={"Authorization": ""})
        assert (as_user.status_code, anonymous.status_code) == (403, 401), path
        assert as_user.headers["content-type"].startswith("application/problem+json")


async def test_every_handled_line_carries_the_request_id_of_the_flow(split: Split) -> None:
    user = await split.register("Ed")
    await split.settle()  # notifications knows the user before its order's payment arrives
    answer = await split.client.post(
        "/api/orders",
        headers={**user["headers"], "X-Request-ID": "split-77"},
        json={
            "user_id": user["id"],
            "currency": "EUR",
            "payment_token": "tok_visa",
            "items": [{"sku": "book", "quantity": 1, "unit_price": 900}],
        },
    )
    assert answer.status_code == 201, answer.text
    assert answer.headers["x-request-id"] == "split-77"
    await split.settle()
    order_id = answer.json()["id"]
    payments_of_order = await split.all_pages("/api/payments", order_id=order_id)
    # A handled line names the event's aggregate: the order, or its payment.
    aggregates = {f"for {order_id} ", *(f"for {p['id']} " for p in payments_of_order)}

    def handled_lines(name: str) -> list[dict[str, Any]]:
        lines = [
            json.loads(line)
            for line in split.processes[name].log_tail(2_000).splitlines()
            if line.startswith("{")
        ]
        return [
            line
            for line in lines
            if " handled " in line["message"] and any(a in line["message"] for a in aggregates)
        ]

    payments = handled_lines("payments.1") + handled_lines("payments.2")
    notifications = handled_lines("notifications")
    orders = handled_lines("orders")
    assert [line for line in payments if "OrderPlaced" in line["message"]], split.logs()
    assert [line for line in notifications if "PaymentSucceeded" in line["message"]], split.logs()
    assert [line for line in orders if "PaymentSucceeded" in line["message"]], split.logs()
    for line in payments + notifications + orders:
        assert (line["request_id"], line["correlation_id"]) == ("split-77", "split-77"), line


async def test_a_process_that_does_not_answer_is_named_and_the_call_still_answers(
    split: Split,
) -> None:
    stopped = split.processes["payments.2"]
    stopped.process.send_signal(signal.SIGSTOP)  # alive, announced, silent
    try:
        started = time.monotonic()
        # At once: a process silent for the discovery TTL (4 s) drops out of the live ones.
        page, bus, switches = await asyncio.gather(
            split.client.get(f"{ADMIN}/dead-letters"),
            split.client.get(f"{ADMIN}/bus"),
            split.client.get(FAULTS),
        )
        took = time.monotonic() - started
    finally:
        stopped.process.send_signal(signal.SIGCONT)
    assert (page.status_code, bus.status_code, switches.status_code) == (200, 200, 200)
    assert page.json()["unreachable"] == [named(split, "payments.2")]
    assert bus.json()["unreachable"] == [named(split, "payments.2")]
    assert switches.headers["x-seams-unreachable"] == named(split, "payments.2")
    decline = next(s for s in switches.json() if s["name"] == "decline_rate")
    assert decline["processes"] == [named(split, "payments.1")]
    assert took < 6.0  # the short answer timeout (2 s) and slack, never the 60 s read timeout

    deadline = time.monotonic() + 10
    while True:  # back: announced and answering again, for whatever runs next
        bus_now = await split.get(f"{ADMIN}/bus")
        answering = {p["process"] for p in bus_now["processes"]}
        if named(split, "payments.2") in answering and not bus_now["unreachable"]:
            break
        assert time.monotonic() < deadline, bus_now["unreachable"]
        await anyio.sleep(0.2)
