"""Which consumer reads which field of which event, derived from the consumers' code, and
checked against the contracts: a producer that removes, renames or retypes a field some
consumer reads fails here, naming the producer, the consumer, the event, the field and the
line that reads it; a field nobody reads may come and go (docs/decisions/0026).

A consumer reads an event through the parameters annotated with its class (the handler's,
and any helper's it hands the event to); what it reads is the attributes it takes of them.
The types it expects are the ones in the committed catalog, docs/contracts/catalog.json.
"""

from __future__ import annotations

import ast
import copy
import importlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.bus import event_type_name
from app.gateway.asyncapi import CATALOG_PATH, event_catalog
from app.main import default_modules
from app.modules.spec import Module

ROOT = Path(__file__).parents[2]
NOT_FIELDS = {"wire_name", "version"}  # the contract's class variables, not its payload


@dataclass(frozen=True)
class Read:
    consumer: str
    event: str
    field: str
    where: str  # path:line


def reads_of(module: Module) -> Iterator[Read]:
    """Every attribute a module's code takes of a parameter annotated with an event it
    subscribes to (a union annotation counts for each of its events)."""
    subscribed = {event.__name__: event_type_name(event) for event in module.subscribes}
    package = importlib.import_module(module.source_package)
    for path in sorted(Path(str(package.__file__)).parent.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            arguments = function.args
            for parameter in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs):
                annotation = parameter.annotation
                named = ast.walk(annotation) if annotation is not None else iter(())
                events = [
                    subscribed[node.id]
                    for node in named
                    if isinstance(node, ast.Name) and node.id in subscribed
                ]
                for node in ast.walk(function):
                    if (
                        events
                        and isinstance(node, ast.Attribute)
                        and isinstance(node.value, ast.Name)
                        and node.value.id == parameter.arg
                        and node.attr not in NOT_FIELDS
                    ):
                        where = f"{path.relative_to(ROOT)}:{node.lineno}"
                        yield from (Read(module.name, e, node.attr, where) for e in events)


def all_reads() -> list[Read]:
    return sorted(
        {read for module in default_modules() for read in reads_of(module)},
        key=lambda r: (r.event, r.consumer, r.field, r.where),
    )


def broken_reads(
    reads: list[Read], contracts: dict[str, Any], expected: dict[str, Any]
) -> list[str]:
    """What the contracts (the code's catalog) no longer give the readers that were written
    against `expected` (the committed catalog)."""
    found: list[str] = []
    for read in reads:
        contract = contracts["events"].get(read.event)
        if contract is None:
            found.append(
                f"{read.event} is gone, but {read.consumer} reads its {read.field} ({read.where})"
            )
            continue
        producer = contract["producer"] or "no module"
        now = contract["fields"].get(read.field)
        before = expected["events"].get(read.event, {}).get("fields", {}).get(read.field)
        if now is None:
            found.append(
                f"{producer} removed or renamed field {read.field} of {read.event}, which "
                f"{read.consumer} reads ({read.where})"
            )
        elif before is not None and now != before:
            found.append(
                f"{producer} retyped field {read.field} of {read.event} from "
                f"{json.dumps(before, sort_keys=True)} to {json.dumps(now, sort_keys=True)}, "
                f"which {read.consumer} reads ({read.where})"
            )
    return found


def catalogs() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the code's catalog, the committed one), as plain JSON values."""
    current = json.loads(json.dumps(event_catalog(default_modules())))
    return current, json.loads((ROOT / CATALOG_PATH).read_text())


def test_what_each_consumer_reads_is_derived_from_its_code() -> None:
    reads = {(r.consumer, r.event, r.field) for r in all_reads()}

    assert {
        ("payments", "OrderPlaced", "total"),
        ("payments", "OrderPlaced", "payment_token"),
        ("orders", "PaymentSucceeded", "order_id"),
        ("notifications", "UserRegistered", "user_id"),
    } <= reads
    # Nobody reads the field OrderPlaced v2 added yet: adding it broke no reader.
    assert not any(event == "OrderPlaced" and field == "item_count" for _, event, field in reads)


def test_every_field_a_consumer_reads_is_in_its_contract_with_the_type_it_expects() -> None:
    current, committed = catalogs()

    assert broken_reads(all_reads(), current, committed) == []


def test_a_removed_field_names_the_producer_the_consumer_the_event_and_the_field() -> None:
    current, committed = catalogs()
    planted = copy.deepcopy(current)
    planted["events"]["OrderPlaced"]["fields"]["amount"] = planted["events"]["OrderPlaced"][
        "fields"
    ].pop("total")  # planted: the producer renamed total to amount

    found = broken_reads(all_reads(), planted, committed)

    assert found, "the planted rename went unnoticed"
    assert all(
        line.startswith(
            "orders removed or renamed field total of OrderPlaced, which payments reads "
            "(app/modules/payments/"
        )
        for line in found
    ), found


def test_a_retyped_field_names_the_types_and_an_added_field_passes() -> None:
    current, committed = catalogs()
    planted = copy.deepcopy(current)
    fields = planted["events"]["PaymentSucceeded"]["fields"]
    fields["order_id"] = {"required": True, "type": "integer"}  # planted: retyped
    fields["fee"] = {"required": True, "type": "integer"}  # planted: added, read by no one

    found = broken_reads(all_reads(), planted, committed)

    assert found
    for line in found:
        assert line.startswith(
            'payments retyped field order_id of PaymentSucceeded from {"required": true, '
            '"type": "string"} to {"required": true, "type": "integer"}, which '
        ), line
    assert {line.split(", which ")[1].split(" ")[0] for line in found} == {
        "orders",
        "notifications",
    }
