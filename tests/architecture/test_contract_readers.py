"""Which consumer reads which field of which event, derived from the consumers' views, and
checked against the producers' contracts: a producer change that removes, renames or retypes
a field some view reads fails here, naming the producer, the consumer, the event and the
field; a field no view reads may come and go (docs/decisions/0027-tolerant-readers.md).

A consumer reads an event through its own view (Module.reads): a Struct of only the fields it
needs, unknown fields ignored. What it reads is that view's fields, with the types it
declares; the producer's contract must still give every one of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.bus import Event, View, event_type_name
from app.bus.contracts import reading
from app.gateway.asyncapi import SCHEMAS
from app.main import default_modules
from app.modules.spec import Module
from tests.fixtures.contracts.planted import (
    OrderPlacedTotalRenamed,
    PaymentSucceededFeeAdded,
    PaymentSucceededOrderIdRetyped,
)


@dataclass(frozen=True)
class Read:
    consumer: str
    event: str
    field: str
    schema: dict[str, Any]  # the JSON Schema of the type the consumer expects, and required
    view: str  # where: the view's qualified name


def schemas_of(struct: type[msgspec.Struct]) -> dict[str, dict[str, Any]]:
    """Each field's JSON Schema (without prose), with whether the struct requires it."""
    [ref], schemas = msgspec.json.schema_components([struct], ref_template=SCHEMAS)
    own = schemas[ref["$ref"].rsplit("/", 1)[-1]]
    required = set(own.get("required", ()))
    prose = ("title", "description", "examples")
    return {
        name: {**{k: v for k, v in schema.items() if k not in prose}, "required": name in required}
        for name, schema in own["properties"].items()
    }


def reads_of(module: Module) -> list[Read]:
    """Every field a module's views read, for every event it subscribes to."""
    found: list[Read] = []
    for event in module.subscribes:
        view = module.view_of(event)
        where = f"{view.__module__}.{view.__qualname__}"
        found += [
            Read(module.name, event_type_name(event), name, schema, where)
            for name, schema in schemas_of(view).items()
        ]
    return found


def all_reads(modules: Sequence[Module]) -> list[Read]:
    return sorted(
        (read for module in modules for read in reads_of(module)),
        key=lambda r: (r.event, r.consumer, r.field),
    )


def producers_of(modules: Sequence[Module]) -> dict[str, tuple[str, type[Event]]]:
    """Wire name -> (its producer, its contract class), as the code declares them."""
    return {
        event_type_name(event): (module.name, event)
        for module in modules
        for event in module.publishes
    }


def gives(contract: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether every value the contract allows is one the reader's type takes: the same
    type, or a union the reader declares that holds it; and a field the reader requires is
    one the producer must send."""
    if expected["required"] and not contract["required"]:
        return False
    wanted = {k: v for k, v in expected.items() if k not in ("required", "default")}
    given_ = {k: v for k, v in contract.items() if k not in ("required", "default")}
    if wanted == given_:
        return True
    options = wanted.get("anyOf", [wanted])
    return all(option in options for option in given_.get("anyOf", [given_]))


def broken_reads(
    reads: Sequence[Read], producers: Mapping[str, tuple[str, type[Event]]]
) -> list[str]:
    """What the producers' contracts no longer give the views that read them."""
    found: list[str] = []
    for read in reads:
        if read.event not in producers:
            found.append(
                f"no module publishes {read.event} any more, but {read.consumer} reads its "
                f"{read.field} ({read.view})"
            )
            continue
        producer, contract = producers[read.event]
        now = schemas_of(contract).get(read.field)
        if now is None:
            found.append(
                f"{producer} removed or renamed field {read.field} of {read.event}, which "
                f"{read.consumer} reads ({read.view})"
            )
        elif not gives(now, read.schema):
            found.append(
                f"{producer} retyped field {read.field} of {read.event} to "
                f"{json.dumps(now, sort_keys=True)}, but {read.consumer} reads it as "
                f"{json.dumps(read.schema, sort_keys=True)} ({read.view})"
            )
    return found


def planted(contract: type[Event]) -> dict[str, tuple[str, type[Event]]]:
    """The real producers, with one contract replaced by a planted change of it."""
    producers = producers_of(default_modules())
    producer, _ = producers[event_type_name(contract)]
    return {**producers, event_type_name(contract): (producer, contract)}


def test_what_each_consumer_reads_is_derived_from_its_views() -> None:
    reads = {(r.consumer, r.event, r.field) for r in all_reads(default_modules())}

    assert {
        ("payments", "OrderPlaced", "total"),
        ("payments", "OrderPlaced", "payment_token"),
        ("payments", "OrderCancelled", "order_id"),
        ("orders", "PaymentSucceeded", "order_id"),
        ("notifications", "PaymentRefunded", "amount"),
    } <= reads
    # Nobody reads the field OrderPlaced v2 added: adding it broke no reader.
    assert not any(event == "OrderPlaced" and field == "item_count" for _, event, field in reads)
    # A view reads only what it needs: payments' OrderCancelled view is one field.
    assert {f for c, e, f in reads if (c, e) == ("payments", "OrderCancelled")} == {"order_id"}


def test_every_consumer_reads_through_its_own_view() -> None:
    whole = {
        (module.name, event_type_name(event))
        for module in default_modules()
        for event in module.subscribes
        if not issubclass(module.view_of(event), View)
    }

    assert whole == set(), "give each of these consumers a view (Module.reads)"


def test_every_field_a_consumer_reads_is_in_its_contract_with_a_type_it_takes() -> None:
    modules = default_modules()

    assert broken_reads(all_reads(modules), producers_of(modules)) == []


def test_a_renamed_field_names_the_producer_the_consumer_the_event_and_the_field() -> None:
    found = broken_reads(all_reads(default_modules()), planted(OrderPlacedTotalRenamed))

    assert found == [
        "orders removed or renamed field total of OrderPlaced, which payments reads "
        "(app.modules.payments.views.PlacedOrder)"
    ]


def test_a_retyped_field_names_every_consumer_reading_it_and_the_types() -> None:
    found = broken_reads(all_reads(default_modules()), planted(PaymentSucceededOrderIdRetyped))

    assert found == [
        f"payments retyped field order_id of PaymentSucceeded to "
        f'{{"required": true, "type": "integer"}}, but {consumer} reads it as '
        f'{{"required": true, "type": "string"}} (app.modules.{consumer}.views.{view})'
        for consumer, view in (("notifications", "ReceivedPayment"), ("orders", "PaidOrder"))
    ]


def test_an_added_field_breaks_no_reader() -> None:
    assert broken_reads(all_reads(default_modules()), planted(PaymentSucceededFeeAdded)) == []


def test_a_reader_may_take_more_than_the_producer_sends_but_not_less() -> None:
    integer = {"type": "integer", "required": True}
    maybe = {"anyOf": [{"type": "integer"}, {"type": "null"}], "required": True}
    optional = {"type": "integer", "required": False}

    assert gives(integer, maybe)
    assert not gives(maybe, integer)
    assert gives(integer, {**integer, "required": False})
    assert not gives(optional, integer)


def pairs() -> list[tuple[str, type[Event], type[View] | type[Event]]]:
    """(consumer, the producer's contract, the consumer's view of it) for every reading."""
    modules = default_modules()
    producers = producers_of(modules)
    return [
        (module.name, producers[event_type_name(event)][1], module.view_of(event))
        for module in modules
        for event in module.subscribes
    ]


@pytest.mark.parametrize(
    ("consumer", "contract", "view"),
    pairs(),
    ids=[f"{c}-{event_type_name(e)}" for c, e, _ in pairs()],
)
@given(data=st.data())
def test_whatever_a_producer_publishes_its_consumers_view_opens(
    consumer: str,
    contract: type[Event],
    view: type[View] | type[Event],
    data: st.DataObject,
) -> None:
    """The invariant the check above stands for: any payload the producer can publish, at
    the newest version, opens through each consumer's view to the same values; a field the
    producer adds later is ignored by every view (a tolerant reader)."""
    event = data.draw(st.builds(contract), label="published")
    payload = msgspec.to_builtins(event)
    if issubclass(view, View):
        payload["added_later"] = data.draw(st.integers() | st.text(), label="added field")

    opened = reading(view).open(contract.version, payload)

    fields = msgspec.structs.fields(view)
    assert {f.name: getattr(opened, f.name) for f in fields} == {
        f.name: getattr(event, f.name) for f in fields
    }, consumer
