"""The log tells an order's story too (issue 14, point 8): one INFO line per event a consumer
handled, carrying the request id of the request that started the flow."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest

from app.logs import configure_logging
from tests.support.seams import fast_settings, running

pytestmark = pytest.mark.anyio

# [request id] module logger: consumer handled Type for aggregate in N ms
HANDLED = re.compile(r"\[order-77\] \w+ app\.bus: (\w+) handled (\w+) for (\S+) in [\d.]+ ms$")


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    """Logging as `python -m app` configures it (text, INFO), into a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(fast_settings(log_format="text", log_level="INFO"), stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_each_event_handled_is_one_line_with_the_flow_s_request_id(
    text_log: io.StringIO,
) -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        user = await seams.register("Lou")
        response = await seams.client.post(
            "/api/orders",
            headers={**user["headers"], "X-Request-ID": "order-77"},
            json={"currency": "EUR", "payment_token": "tok_visa",
                  "items": [{"sku": "a", "quantity": 1, "unit_price": 100}]},
        )  # fmt: skip
        assert response.status_code == 201
        await seams.settle()
    order = response.json()["id"]

    handled = [line for line in text_log.getvalue().splitlines() if " app.bus: " in line]
    told = {match.group(1, 2, 3) for line in handled if (match := HANDLED.search(line))}
    payment = next(aggregate for _, kind, aggregate in told if kind == "PaymentSucceeded")
    assert told == {
        ("payments", "OrderPlaced", order),
        ("orders", "PaymentSucceeded", payment),
        ("notifications", "PaymentSucceeded", payment),
    }
