"""Structured logs: one JSON object per line, each with its request id, correlation id and
module, so one id follows an order from the HTTP call to its notification."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from app.logs import ContextFilter, JsonFormatter
from tests.support.seams import fast_settings, running

pytestmark = pytest.mark.anyio


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


async def test_one_id_follows_an_order_through_every_module_s_log_lines(
    json_lines: io.StringIO,
) -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        user = await seams.register("Lou")
        response = await seams.client.post(
            "/api/orders",
            headers={**user["headers"], "X-Request-ID": "order-42"},
            json={"currency": "EUR", "payment_token": "tok_visa",
                  "items": [{"sku": "a", "quantity": 1, "unit_price": 100}]},
        )  # fmt: skip
        assert response.status_code == 201
        await seams.settle()

    lines = [json.loads(line) for line in json_lines.getvalue().splitlines()]
    assert all(
        {"time", "level", "logger", "module", "request_id", "correlation_id"} <= set(entry)
        for entry in lines
    )
    flow = [entry for entry in lines if entry["correlation_id"] == "order-42"]
    access = [entry for entry in flow if entry["logger"] == "app.access"]
    assert [(entry["module"], entry["message"]) for entry in access] == [
        ("orders", "POST /api/orders 201")
    ]
    email = [entry for entry in flow if entry["logger"] == "app.modules.notifications"]
    assert [entry["module"] for entry in email] == ["notifications"]
    assert email[0]["message"].startswith("email to ")
