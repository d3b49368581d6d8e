"""Structured logs: one JSON object per line, each with its request id, correlation id and
module, so one id follows an order from the HTTP call to its notification."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from app.logs import ContextFilter, JsonFormatter, configure_logging
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


@pytest.fixture
def text_log() -> Iterator[Callable[[], list[str]]]:
    """Logging as `python -m app` configures it in the text format, into a buffer; each call
    gives the lines written since the last."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(fast_settings(log_format="text", log_level="INFO"), stream)

    def written() -> list[str]:
        lines = stream.getvalue().splitlines()
        stream.seek(0)
        stream.truncate()
        return lines

    yield written
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_a_newline_in_a_path_cannot_forge_a_text_log_line(
    text_log: Callable[[], list[str]],
) -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        text_log()  # what starting up wrote
        await seams.client.get("/api/orders/x%0aFAKE%20LINE")
        forged = ours(text_log())
        await seams.client.get("/api/orders/x%1b[31mred%c2%85next%e2%80%a8sep%7f")
        coloured = ours(text_log())

    assert len(forged) == 1, forged
    assert re.search(r" app\.access: GET /api/orders/x\\nFAKE LINE \d{3}$", forged[0]), forged
    assert len(coloured) == 1, coloured
    assert re.search(
        r" app\.access: GET /api/orders/x\\x1b\[31mred\\x85next\\u2028sep\\x7f \d{3}$",
        coloured[0],
    ), coloured


def ours(lines: list[str]) -> list[str]:
    """The lines the app wrote, without the test client's own (httpx logs each request)."""
    return [line for line in lines if " httpx httpx: " not in line]


def test_a_traceback_keeps_its_lines_but_no_line_of_it_passes_for_a_record(
    text_log: Callable[[], list[str]],
) -> None:
    log = logging.getLogger("app.gateway")
    try:
        raise ValueError("bad input\n2026-01-01 00:00:00,000 INFO [-] gateway app: forged\x1b[2J")
    except ValueError:
        log.exception("failed on %s", "a\rb")

    lines = text_log()
    assert lines[0].endswith("app.gateway: failed on a\\rb"), lines
    assert len(lines) > 3, lines  # the traceback is still one line per frame
    assert all(line.startswith(" ") for line in lines[1:]), lines
    assert not any("\x1b" in line for line in lines), lines
    assert lines[-1].strip().startswith("2026-01-01") and "\\x1b[2J" in lines[-1], lines


async def test_json_logs_escape_control_characters_too(json_lines: io.StringIO) -> None:
    async with running(fast_settings(ephemeral="true")) as seams:
        await seams.client.get("/api/orders/x%0aFAKE%1b[31m%c2%9bnext%e2%80%a8sep")
        await seams.settle()

    raw = json_lines.getvalue()
    assert not any(c in raw for c in "\x1b\x9b\u2028\r"), repr(raw)
    access = [json.loads(line) for line in raw.splitlines() if '"app.access"' in line]
    assert len(access) == 1, access
    assert re.fullmatch(
        "GET /api/orders/x\nFAKE\x1b\\[31m\x9bnext\u2028sep \\d{3}", access[0]["message"]
    )
