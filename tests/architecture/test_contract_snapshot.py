"""The event catalog committed in docs/contracts/catalog.json is what the code declares. A
contract that changed without a version bump fails here, naming the event, what changed,
its producer and its consumers, and how to go on (docs/decisions/0026-event-versions.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from app.gateway.asyncapi import CATALOG_PATH, REGENERATE, catalog_json, event_catalog
from app.main import default_modules

ROOT = Path(__file__).parents[2]


def field_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    removed = [f"field {name} removed" for name in sorted(before.keys() - after.keys())]
    added = [f"field {name} added" for name in sorted(after.keys() - before.keys())]
    changed = [
        f"field {name} retyped from {json.dumps(before[name])} to {json.dumps(after[name])}"
        for name in sorted(before.keys() & after.keys())
        if before[name] != after[name]
    ]
    return removed + changed + added


def drift(committed: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One sentence per event whose contract differs from the committed catalog."""
    found: list[str] = []
    old, new = committed["events"], current["events"]
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if before is None:
            found.append(f"{name} is new (published by {after['producer']}): regenerate")
            continue
        readers = ", ".join(before["consumers"]) or "no module"
        if after is None:
            found.append(f"{name} is gone from the code, but {readers} consumed it")
            continue
        who = f"published by {after['producer'] or 'no module'}, consumed by {readers}"
        changes = field_changes(before["fields"], after["fields"])
        if after["version"] < before["version"]:
            found.append(
                f"{name} went back from v{before['version']} to v{after['version']}: versions "
                f"only grow, or stored v{before['version']} envelopes become unreadable"
            )
        elif after["version"] == before["version"] and _only_optional_added(before, after):
            found.append(
                f"{name} v{before['version']} gained {'; '.join(changes)} (not required: "
                f"every stored v{before['version']} payload still reads, and consumers ignore "
                f"fields their views do not name); {who}: regenerate"
            )
        elif after["version"] == before["version"] and changes:
            found.append(
                f"{name} v{before['version']} changed without a version bump "
                f"({'; '.join(changes)}); {who}: make it v{before['version'] + 1} with an "
                f"upcaster from v{before['version']} next to its contract, upgrade "
                "its consumers first, then regenerate"
            )
        elif after["version"] > before["version"]:
            found.append(
                f"{name} is v{after['version']} in the code and v{before['version']} in the "
                f"catalog ({'; '.join(changes) or 'same fields'}); {who}: regenerate"
            )
        else:
            moved = sorted(k for k in after if k != "fields" and after[k] != before[k])
            found.append(f"{name}: {', '.join(moved)} changed; {who}: regenerate")
    return found


def _only_optional_added(before: dict[str, Any], after: dict[str, Any]) -> bool:
    """A change a version need not mark (the schema registries' backward compatibility with
    tolerant readers, docs/decisions/0027): fields added that a payload may leave out."""
    old, new = before["fields"], after["fields"]
    added = new.keys() - old.keys()
    unchanged = all(new.get(name) == schema for name, schema in old.items())
    return bool(added) and unchanged and not any(new[name]["required"] for name in added)


def report(found: list[str]) -> str:
    return "\n".join(
        [f"{CATALOG_PATH} differs from the code:", *found, f"regenerate with: {REGENERATE}"]
    )


def test_the_committed_catalog_is_what_the_code_declares() -> None:
    committed_bytes = (ROOT / CATALOG_PATH).read_bytes()
    current = event_catalog(default_modules())

    found = drift(json.loads(committed_bytes), json.loads(json.dumps(current)))

    assert not found, report(found)
    assert committed_bytes == catalog_json(default_modules()), report(["it is not formatted"])


def test_a_producer_dropping_a_field_without_a_bump_names_who_it_breaks() -> None:
    committed = json.loads(catalog_json(default_modules()))
    current = copy.deepcopy(committed)
    del current["events"]["OrderPlaced"]["fields"]["total"]  # planted: the producer dropped it

    [found] = drift(committed, current)

    assert found.startswith("OrderPlaced v2 changed without a version bump (field total removed)")
    assert "published by orders, consumed by payments" in found
    assert "make it v3 with an upcaster from v2" in found
    assert REGENERATE in report([found])


def test_a_retyped_or_added_required_field_without_a_bump_fails_too() -> None:
    """A required field added to an old version would make its stored payloads unreadable
    to a view that reads it: that needs a version and an upcaster."""
    committed = json.loads(catalog_json(default_modules()))
    current = copy.deepcopy(committed)
    fields = current["events"]["PaymentSucceeded"]["fields"]
    fields["amount"] = {"required": True, "type": "string"}  # planted
    fields["fee"] = {"required": True, "type": "integer"}  # planted

    [found] = drift(committed, current)

    assert "PaymentSucceeded v1 changed without a version bump" in found
    assert 'field amount retyped from {"required": true, "type": "integer"}' in found
    assert "field fee added" in found
    assert "published by payments, consumed by notifications, orders" in found


def test_an_added_optional_field_only_asks_for_the_catalog_to_be_regenerated() -> None:
    committed = json.loads(catalog_json(default_modules()))
    current = copy.deepcopy(committed)
    fields = current["events"]["PaymentSucceeded"]["fields"]
    fields["fee"] = {"required": False, "type": "integer"}  # planted: added, with a default

    [found] = drift(committed, current)

    assert found.startswith("PaymentSucceeded v1 gained field fee added (not required")
    assert found.endswith("consumed by notifications, orders: regenerate")


def test_a_bumped_version_only_asks_for_the_catalog_to_be_regenerated() -> None:
    committed = json.loads(catalog_json(default_modules()))
    current = copy.deepcopy(committed)
    current["events"]["UserUpdated"]["version"] = 3  # planted: bumped, with a new field
    current["events"]["UserUpdated"]["fields"]["locale"] = {"required": True, "type": "string"}

    [found] = drift(committed, current)

    assert found == (
        "UserUpdated is v3 in the code and v2 in the catalog (field locale added); "
        "published by users, consumed by notifications: regenerate"
    )
