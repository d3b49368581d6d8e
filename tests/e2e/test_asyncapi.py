"""The AsyncAPI 3.0 document at /schema/asyncapi.json: valid against the specification's own
JSON Schema (vendored in tests/fixtures/asyncapi, no network), derived from the modules'
declarations, public like /schema, and the same as `python -m app contracts` prints."""

from __future__ import annotations

import copy
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import jsonschema
import msgspec
import pytest
from litestar import Litestar

from app.__main__ import main
from app.bus import event_type_name
from app.gateway.asyncapi import asyncapi_document
from app.main import create_gateway_app, default_modules
from app.split.nats_transport import NatsTransport
from tests.support.seams import Seams, fast_settings, running

pytestmark = pytest.mark.anyio

SPEC = Path(__file__).parents[1] / "fixtures" / "asyncapi" / "asyncapi-3.0.0.schema.json"
PATH = "/schema/asyncapi.json"
ENVELOPE_HEADERS = {
    "id",
    "type",
    "version",
    "occurred_at",
    "producer",
    "aggregate_id",
    "sequence",
    "correlation_id",
    "causation_id",
    "traceparent",
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def seams() -> AsyncIterator[Seams]:
    async with running(fast_settings(ephemeral="true")) as system:
        yield system


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(SPEC.read_text()))


async def anonymous_get(app: Litestar, path: str) -> httpx.Response:
    """Without a token."""
    transport = httpx.ASGITransport(app=cast(Any, app))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as c:
        return await c.get(path)


async def served(seams: Seams) -> dict[str, Any]:
    response = await anonymous_get(seams.app, PATH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def problems(validator: jsonschema.Draft7Validator, document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


async def test_the_document_is_valid_asyncapi_3_and_public(
    seams: Seams, validator: jsonschema.Draft7Validator
) -> None:
    document = await served(seams)  # asked without a token

    assert document["asyncapi"] == "3.0.0"
    assert problems(validator, document) == []


async def test_the_vendored_schema_refuses_what_asyncapi_3_does_not_allow(
    seams: Seams, validator: jsonschema.Draft7Validator
) -> None:
    """So that the validity above means something: an AsyncAPI 2 `publish` is refused."""
    broken = copy.deepcopy(await served(seams))
    broken["operations"]["orders_sends_OrderPlaced"]["action"] = "publish"
    broken["channels"]["OrderPlaced"]["address"] = 42

    found = problems(validator, broken)

    assert any("operations/orders_sends_OrderPlaced" in p for p in found), found
    assert any("channels/OrderPlaced" in p for p in found), found


async def test_one_channel_per_event_type_on_the_subject_split_mode_uses(seams: Seams) -> None:
    document = await served(seams)
    nats = NatsTransport("nats://localhost:4222")  # the subjects the split mode publishes on
    events = {event for module in default_modules() for event in module.publishes}

    assert {name: channel["address"] for name, channel in document["channels"].items()} == {
        event_type_name(event): nats.subject_for(event_type_name(event)) for event in events
    }
    assert set(document["servers"]) == {"in-process", "nats"}
    assert document["servers"]["nats"]["protocol"] == "nats"


async def test_a_send_for_each_producer_and_a_receive_for_each_consumer(seams: Seams) -> None:
    document = await served(seams)
    expected = {
        (module.name, "send", event_type_name(event))
        for module in default_modules()
        for event in module.publishes
    } | {
        (module.name, "receive", event_type_name(event))
        for module in default_modules()
        for event in module.subscribes
    }

    found = {
        (name.split("_", 1)[0], operation["action"], operation["channel"]["$ref"].split("/")[-1])
        for name, operation in document["operations"].items()
    }

    assert found == expected
    receive = document["operations"]["payments_receives_OrderPlaced"]
    assert receive["x-seams-reads-versions"] == [1, 2]
    # payments' view of OrderPlaced: the fields it charges with, not item_count.
    assert receive["x-seams-reads-fields"] == [
        "currency",
        "order_id",
        "payment_token",
        "total",
        "user_id",
    ]
    assert "a newer version is parked" in receive["summary"]


async def test_each_message_has_the_contracts_schema_and_the_envelope_as_headers(
    seams: Seams,
) -> None:
    document = await served(seams)
    message = document["components"]["messages"]["OrderPlaced"]
    payload = document["components"]["schemas"][message["payload"]["$ref"].split("/")[-1]]

    assert payload["properties"]["item_count"] == {"anyOf": [{"type": "integer"}, {"type": "null"}]}
    assert payload["additionalProperties"] is False
    assert set(payload["required"]) >= {"order_id", "total", "item_count"}
    headers = message["headers"]["properties"]
    assert set(headers) == ENVELOPE_HEADERS
    assert (headers["type"]["const"], headers["version"]["const"]) == ("OrderPlaced", 2)
    assert headers["producer"]["const"] == "orders"


async def test_python_m_app_contracts_prints_the_same_document(
    seams: Seams, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["contracts"]) == 0

    printed = json.loads(capsys.readouterr().out)
    assert printed == await served(seams)
    assert printed == msgspec.json.decode(msgspec.json.encode(asyncapi_document(default_modules())))


async def test_the_split_gateway_serves_the_same_document(seams: Seams) -> None:
    """Built, not started: nothing connects to NATS, and the document needs nothing that does."""
    gateway = create_gateway_app(
        fast_settings(
            ephemeral="true", bus_url="nats://127.0.0.1:4222", secret_key=secrets.token_urlsafe(48)
        )
    )

    response = await anonymous_get(gateway, PATH)

    assert response.status_code == 200
    assert response.json() == await served(seams)
