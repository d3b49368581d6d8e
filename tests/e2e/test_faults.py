"""Fault switches (issue 14, point 6): the admin API that lists and sets them, refused to
non-admins and under APP_ENV=production, and what each fault does to a real order."""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio

FAULTS = "/api/admin/faults"
PROCESSOR_SWITCHES = {
    "decline_rate": ("rate", 0.0, 1.0),
    "transient_rate": ("rate", 0.0, 1.0),
    "slow_card_seconds": ("seconds", 0.0, 30.0),
}


@pytest.fixture
async def one(anyio_backend: str) -> AsyncIterator[Seams]:
    """The whole system in memory: the API's answers do not depend on the store."""
    async with running(fast_settings(ephemeral="true")) as seams:
        yield seams


async def switches(seams: Seams) -> dict[str, dict[str, Any]]:
    listed: list[dict[str, Any]] = await seams.get(FAULTS)
    return {s["name"]: s for s in listed}


async def test_every_processor_switch_is_listed_off_with_its_kind_range_and_explanation(
    one: Seams,
) -> None:
    listed = await switches(one)

    for name, (kind, least, most) in PROCESSOR_SWITCHES.items():
        switch = listed[name]
        assert (switch["module"], switch["kind"]) == ("payments", kind)
        assert (switch["value"], switch["min"], switch["max"]) == (least, least, most)
        assert switch["label"]
        assert switch["explain"].endswith(".")


async def test_an_admin_sets_a_switch_and_the_change_is_logged_with_who_and_what(
    one: Seams, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="app.gateway.faults")

    response = await one.client.put(f"{FAULTS}/decline_rate", json={"value": 0.5})

    assert response.status_code == 200, response.text
    assert response.json()["value"] == 0.5
    assert (await switches(one))["decline_rate"]["value"] == 0.5
    [record] = [r for r in caplog.records if r.name == "app.gateway.faults"]
    assert record.levelno == logging.WARNING
    assert "decline_rate" in record.getMessage()
    assert "0.5" in record.getMessage()
    assert one.admin_id in record.getMessage()


async def test_seconds_take_whole_numbers_up_to_thirty(one: Seams) -> None:
    response = await one.client.put(f"{FAULTS}/slow_card_seconds", json={"value": 30})

    assert response.status_code == 200, response.text
    assert response.json()["value"] == 30.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("decline_rate", 1.5),
        ("decline_rate", -0.1),
        ("transient_rate", True),
        ("decline_rate", "0.5"),
        ("decline_rate", None),
        ("slow_card_seconds", 30.5),
    ],
)
async def test_a_value_out_of_range_or_of_the_wrong_type_is_a_400_naming_the_value(
    one: Seams, name: str, value: Any
) -> None:
    response = await one.client.put(f"{FAULTS}/{name}", json={"value": value})

    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == ["value"]
    assert (await switches(one))[name]["value"] == 0.0  # unchanged


async def test_an_unknown_switch_is_a_404(one: Seams) -> None:
    response = await one.client.put(f"{FAULTS}/melt_the_disk", json={"value": 1})

    assert response.status_code == 404
    assert "melt_the_disk" in response.json()["detail"]


async def test_reset_switches_every_fault_off(one: Seams) -> None:
    for name in PROCESSOR_SWITCHES:
        assert (await one.client.put(f"{FAULTS}/{name}", json={"value": 1})).status_code == 200
    for name in ("pause:payments", "break:notifications"):
        assert (await one.client.put(f"{FAULTS}/{name}", json={"value": True})).status_code == 200

    response = await one.client.delete(FAULTS)

    assert response.status_code == 204
    values = {name: switch["value"] for name, switch in (await switches(one)).items()}
    assert values == {name: False if ":" in name else 0.0 for name in values}
    assert not one.runtime.bus.consumer_state("payments").paused


async def test_a_user_who_is_not_an_admin_is_refused_every_fault_route(one: Seams) -> None:
    user = await one.register("Uma")
    headers = user["headers"]

    answers = [
        await one.client.get(FAULTS, headers=headers),
        await one.client.put(f"{FAULTS}/decline_rate", json={"value": 1}, headers=headers),
        await one.client.delete(FAULTS, headers=headers),
    ]

    assert [a.status_code for a in answers] == [403, 403, 403]
    assert (await switches(one))["decline_rate"]["value"] == 0.0


async def test_without_a_token_the_fault_routes_are_a_401(one: Seams) -> None:
    response = await one.client.get(FAULTS, headers={"Authorization": ""})

    assert response.status_code == 401


async def test_under_production_every_fault_route_is_refused_saying_why(anyio_backend: str) -> None:
    settings = fast_settings(
        ephemeral="true", env="production", secret_key=secrets.token_urlsafe(48)
    )
    async with running(settings) as seams:
        answers = [
            await seams.client.get(FAULTS),
            await seams.client.put(f"{FAULTS}/decline_rate", json={"value": 1}),
            await seams.client.delete(FAULTS),
        ]

    for answer in answers:
        assert answer.status_code == 403
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["detail"] == (
            "fault switches exist only in development: APP_ENV=production"
        )


async def test_the_fault_routes_are_documented_with_summaries(one: Seams) -> None:
    spec = await one.get("/schema/openapi.json")

    operations = {
        (path, method): operation
        for path, item in spec["paths"].items()
        if path.startswith(FAULTS)
        for method, operation in item.items()
    }
    assert set(operations) == {
        (FAULTS, "get"),
        (FAULTS, "delete"),
        (f"{FAULTS}/{{name}}", "put"),
    }
    assert all(operation["summary"] for operation in operations.values())


# What the faults do to real orders.


async def test_decline_rate_one_fails_a_visa_order(seams: Seams) -> None:
    user = await seams.register("Dora")
    await seams.client.put(f"{FAULTS}/decline_rate", json={"value": 1})

    order = await seams.place(user, "tok_visa")
    await seams.settle()

    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "CANCELLED"
    [payment] = await seams.all_pages("/api/payments", order_id=order["id"])
    assert (payment["status"], payment["failure_reason"]) == ("FAILED", "card_declined")


@pytest.fixture
async def patient(anyio_backend: str) -> AsyncIterator[Seams]:
    """Charges retried slowly enough to switch a fault off between two attempts."""
    settings = fast_settings(
        ephemeral="true", payment_retry_base_seconds="0.05", payment_max_attempts="20"
    )
    async with running(settings) as seams:
        yield seams


async def attempts_of(seams: Seams, order_id: str) -> int:
    payments = await seams.all_pages("/api/payments", order_id=order_id)
    return int(payments[0]["attempts"]) if payments else 0


async def test_transient_errors_for_a_moment_then_the_order_is_paid_after_retries(
    patient: Seams,
) -> None:
    user = await patient.register("Tim")
    await patient.client.put(f"{FAULTS}/transient_rate", json={"value": 1})
    order = await patient.place(user, "tok_visa")
    deadline = time.monotonic() + 10
    while await attempts_of(patient, order["id"]) < 2:  # bounded: two failed attempts
        assert time.monotonic() < deadline, "the charge never failed twice"
        await anyio.sleep(0.01)
    await patient.client.put(f"{FAULTS}/transient_rate", json={"value": 0})
    await patient.settle()

    assert (await patient.get(f"/api/orders/{order['id']}"))["status"] == "PAID"
    [payment] = await patient.all_pages("/api/payments", order_id=order["id"])
    assert payment["status"] == "SUCCEEDED"
    assert payment["attempts"] >= 3


# The bus's switches: one pause and one break per consumer.


async def test_each_consumer_has_a_pause_and_a_break_switch(one: Seams) -> None:
    listed = await switches(one)

    for consumer in ("orders", "payments", "notifications"):
        for name in (f"pause:{consumer}", f"break:{consumer}"):
            assert (listed[name]["module"], listed[name]["kind"]) == (consumer, "on_off")
            assert (listed[name]["value"], listed[name]["min"], listed[name]["max"]) == (
                False,
                False,
                True,
            )


async def test_an_on_off_switch_takes_only_true_or_false(one: Seams) -> None:
    response = await one.client.put(f"{FAULTS}/pause:payments", json={"value": 1})

    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["value"]


async def test_a_paused_consumer_builds_a_backlog_that_drains_on_resume(seams: Seams) -> None:
    user = await seams.register("Pia")
    paused = await seams.client.put(f"{FAULTS}/pause:payments", json={"value": True})
    assert paused.json()["value"] is True

    orders = [await seams.place(user, "tok_visa") for _ in range(3)]
    deadline = time.monotonic() + 10
    while seams.runtime.bus.consumer_state("payments").backlog < 3:  # bounded
        assert time.monotonic() < deadline, seams.runtime.bus.consumer_state("payments")
        await anyio.sleep(0.01)
    statuses = [(await seams.get(f"/api/orders/{o['id']}"))["status"] for o in orders]
    assert statuses == ["PENDING"] * 3

    resumed = await seams.client.put(f"{FAULTS}/pause:payments", json={"value": False})
    assert resumed.json()["value"] is False
    await seams.settle()

    statuses = [(await seams.get(f"/api/orders/{o['id']}"))["status"] for o in orders]
    assert statuses == ["PAID"] * 3
    assert seams.runtime.bus.consumer_state("payments").backlog == 0


async def test_a_broken_handler_dead_letters_and_a_replay_after_mending_notifies_once(
    seams: Seams,
) -> None:
    user = await seams.register("Bo")  # its UserRegistered reaches notifications first
    await seams.settle()
    await seams.client.put(f"{FAULTS}/break:notifications", json={"value": True})

    order = await seams.place(user, "tok_visa")
    await seams.settle()
    letters = (await seams.get("/api/admin/dead-letters"))["items"]
    assert [(d["consumer"], d["event_type"]) for d in letters] == [
        ("notifications", "PaymentSucceeded")
    ]
    assert await seams.all_pages("/api/notifications", order_id=order["id"]) == []

    await seams.client.put(f"{FAULTS}/break:notifications", json={"value": False})
    replay = await seams.client.post(f"/api/admin/dead-letters/{letters[0]['id']}/replay")
    assert replay.status_code == 202
    await seams.settle()

    notes = await seams.all_pages("/api/notifications", order_id=order["id"])
    assert [n["kind"] for n in notes] == ["payment_succeeded"]
    assert (await seams.get(f"/api/orders/{order['id']}"))["status"] == "PAID"
    assert (await seams.get("/api/admin/dead-letters"))["items"] == []
