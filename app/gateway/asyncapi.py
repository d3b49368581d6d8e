"""The AsyncAPI 3.0 document of the system's events, beside the OpenAPI one at /schema.

Derived from what the modules declare (Module.publishes and subscribes) and the event
contracts themselves, never written by hand, so it cannot drift from the code: one channel
per event type, addressed by the NATS subject it travels on in split mode; its message's
payload is the contract's JSON Schema (from msgspec) and its headers the envelope's fields
(docs/decisions/0009-envelope.md); a `send` operation for its producer and a `receive` for
each consumer, saying which versions it accepts and which fields its view reads
(docs/decisions/0026, 0027).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec
from litestar import Response, get
from litestar.handlers import HTTPRouteHandler

from app.bus import Envelope, Event, event_type_name
from app.bus.contracts import View, readable_versions, reading
from app.modules.spec import Module

ASYNCAPI_PATH = "/schema/asyncapi.json"
# The subjects of split mode: app.split.nats_transport.NatsTransport's default prefix (the
# split layer sits above this one; tests/e2e/test_asyncapi.py keeps the two equal).
NATS_SUBJECT_PREFIX = "seams.events"
SCHEMAS = "#/components/schemas/{name}"


def channel_address(event_type: type[Event]) -> str:
    """The NATS subject an event type travels on in split mode."""
    return f"{NATS_SUBJECT_PREFIX}.{event_type_name(event_type)}"


def asyncapi_document(modules: Sequence[Module]) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the events these modules publish and consume."""
    producers = {event: module.name for module in modules for event in module.publishes}
    consumed = [event for module in modules for event in module.subscribes]
    events = sorted({*producers, *consumed}, key=event_type_name)
    refs, schemas = msgspec.json.schema_components([*events, Envelope], ref_template=SCHEMAS)
    payloads = dict(zip(events, refs[:-1], strict=True))
    envelope_schema = schemas.pop("Envelope")
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for event in events:
        name = event_type_name(event)
        channel_ref = {"$ref": f"#/channels/{name}"}
        message_ref = {"$ref": f"#/channels/{name}/messages/{name}"}
        producer = producers.get(event)
        messages[name] = _message(event, payloads[event], envelope_schema, producer)
        channels[name] = {
            "address": channel_address(event),
            "title": name,
            "description": (
                f"{name} v{event.version}, published by {producer or 'no module here'}. In "
                "split mode this is the NATS subject (JetStream stream SEAMS_EVENTS); in "
                "one process the bus routes by the envelope's type."
            ),
            "servers": [{"$ref": "#/servers/in-process"}, {"$ref": "#/servers/nats"}],
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        if producer is not None:
            operations[f"{producer}_sends_{name}"] = {
                "action": "send",
                "channel": channel_ref,
                "title": f"{producer} publishes {name}",
                "summary": f"Through its outbox, as v{event.version} (the newest).",
                "messages": [message_ref],
            }
        for module in modules:
            if event in module.subscribes:
                operations[f"{module.name}_receives_{name}"] = _receive(
                    module, event, channel_ref, message_ref
                )
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Seams events",
            "version": "0.1.0",
            "description": (
                "The events the modules publish and consume: the boundary between them. "
                "Every event travels in the same JSON envelope, in one process or over NATS; "
                "the headers below are the envelope's fields and the payload its `payload`. "
                "Consumers are upgraded before producers: each consumer declares the versions "
                "it accepts and reads only the fields it needs (its view); a newer version "
                "is parked until it is upgraded."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "in-process": {
                "host": "localhost",
                "protocol": "seams-in-process",
                "description": "`python -m app`: every module in one process, on the bus in "
                "memory (pyee), each consumer fed from the producer's outbox.",
            },
            "nats": {
                "host": "localhost:4222",
                "protocol": "nats",
                "description": "Split mode (`python -m app cluster`, or APP_BUS_URL=nats://…): "
                "the broker APP_BUS_URL names, with JetStream; one durable consumer per "
                "module and event type.",
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _receive(
    module: Module, event: type[Event], channel: dict[str, str], message: dict[str, str]
) -> dict[str, Any]:
    """A consumer's receive operation: the versions it accepts and the fields it reads."""
    name = event_type_name(event)
    view = module.view_of(event)
    versions = list(reading(view).accepts)
    fields = sorted(_fields(view))
    return {
        "action": "receive",
        "channel": channel,
        "title": f"{module.name} consumes {name}",
        "summary": (
            f"Accepts {_versions(versions)} (an older one is upcast to the newest first) and "
            f"reads {', '.join(fields)}; a newer version is parked, naming the "
            "version it needs, until this consumer is upgraded: never misread."
        ),
        "messages": [message],
        "x-seams-reads-versions": versions,
        "x-seams-reads-fields": fields,
    }


def _versions(versions: list[int]) -> str:
    if len(versions) == 1:
        return f"version {versions[0]}"
    return f"versions {versions[0]} to {versions[-1]}"


def _message(
    event: type[Event], payload: dict[str, Any], envelope: dict[str, Any], producer: str | None
) -> dict[str, Any]:
    """An event's message: its payload schema, and the envelope's fields as its headers,
    with `type` and `version` pinned to what its producer publishes."""
    name = event_type_name(event)
    properties = {k: v for k, v in envelope["properties"].items() if k != "payload"}
    properties["type"] = {"type": "string", "const": name}
    properties["version"] = {"type": "integer", "const": event.version}
    if producer is not None:
        properties["producer"] = {"type": "string", "const": producer}
    return {
        "name": name,
        "title": f"{name} v{event.version}",
        "contentType": "application/json",
        "headers": {
            "type": "object",
            "properties": properties,
            "required": [r for r in envelope["required"] if r != "payload"],
        },
        "payload": payload,
    }


def asyncapi_route(modules: Sequence[Module]) -> HTTPRouteHandler:
    """GET /schema/asyncapi.json for a gateway in front of these modules; public like the
    OpenAPI document (it says what the events are, never what they hold). Built on the
    first request, then kept: the declarations do not change while the process runs."""
    built: list[bytes] = []

    @get(ASYNCAPI_PATH, include_in_schema=False, sync_to_thread=False)
    def asyncapi_json() -> Response[bytes]:
        if not built:
            built.append(msgspec.json.encode(asyncapi_document(modules)))
        return Response(built[0], media_type="application/json")

    return asyncapi_json


CATALOG_PATH = "docs/contracts/catalog.json"
REGENERATE = "python -m app contracts --catalog"


def event_catalog(modules: Sequence[Module]) -> dict[str, Any]:
    """The system's events as committed in docs/contracts/catalog.json: each one's version,
    the oldest version its upcasters reach, its fields and their JSON Schema types, its
    producer, its consumers, and each consumer's reading: the versions it accepts and the
    fields its view reads, with the types it expects. Class names appear nowhere: only the
    wire matters."""
    producers = {event: module.name for module in modules for event in module.publishes}
    consumed = [event for module in modules for event in module.subscribes]
    events: dict[str, Any] = {}
    for event in sorted({*producers, *consumed}, key=event_type_name):
        versions = readable_versions(event)
        events[event_type_name(event)] = {
            "version": event.version,
            "reads_from_version": versions[0],
            "producer": producers.get(event),
            "consumers": sorted(m.name for m in modules if event in m.subscribes),
            "fields": _fields(event),
            "readers": {
                m.name: _reader(m.view_of(event)) for m in modules if event in m.subscribes
            },
        }
    return {
        "about": f"Generated from the code by `{REGENERATE}`: do not edit by hand. "
        "tests/architecture/test_contract_snapshot.py fails when the code differs from it.",
        "events": events,
    }


def _reader(view: type[View] | type[Event]) -> dict[str, Any]:
    return {"accepts": list(reading(view).accepts), "reads": _fields(view)}


def _fields(struct: type[View] | type[Event]) -> dict[str, Any]:
    """Each field's JSON Schema (without prose) and whether a payload must carry it."""
    [ref], schemas = msgspec.json.schema_components([struct], ref_template=SCHEMAS)
    own = schemas[ref["$ref"].rsplit("/", 1)[-1]]
    required = set(own.get("required", ()))
    return {
        name: {**_without_prose(schema), "required": name in required}
        for name, schema in own["properties"].items()
    }


def _without_prose(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("title", "description", "examples")}


def catalog_json(modules: Sequence[Module]) -> bytes:
    """The catalog as committed: sorted keys, two-space indents, a final newline."""
    encoded = msgspec.json.encode(event_catalog(modules), order="sorted")
    return msgspec.json.format(encoded, indent=2) + b"\n"
