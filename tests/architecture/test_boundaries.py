"""Every boundary at once: imports, capabilities, dependency injection, stores, topology."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.exceptions import ImproperlyConfiguredException

from app.gateway.topology import to_mermaid, topology_of
from app.kernel.boundaries import verify_boundaries
from app.kernel.errors import BoundaryViolation
from app.kernel.sql import SqlDatabase
from app.main import create_app, default_modules
from app.modules.payments.contracts import PaymentSucceeded
from app.modules.spec import Assembly, Module, ModuleContext
from tests.support.seams import fast_settings

MODULE_FILES = {
    "__init__.py": '"""A module planted by a test."""\n',
    "contracts.py": '"""Publishes nothing."""\n',
}


@pytest.fixture
def plant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Write a module package to a temporary folder and make it importable."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(service_source: str) -> tuple[str, Path]:
        package = f"planted_{uuid.uuid4().hex[:8]}"
        folder = tmp_path / package
        folder.mkdir()
        for name, text in MODULE_FILES.items():
            (folder / name).write_text(text)
        (folder / "service.py").write_text(service_source)
        return package, folder

    yield write
    shutil.rmtree(tmp_path, ignore_errors=True)


def planted_module(package: str, **overrides: Any) -> Module:
    def assemble(context: ModuleContext) -> Assembly:
        return Assembly(route_handlers=overrides.get("route_handlers", []), dependencies={})

    return Module(
        name=overrides.get("name", "planted"),
        publishes=(),
        subscribes=overrides.get("subscribes", ()),
        open_store=lambda url: SqlDatabase(url, sa.MetaData()),
        assemble=overrides.get("assemble", assemble),
        package=package,
    )


def test_the_real_modules_keep_their_boundaries() -> None:
    verify_boundaries([m.boundary for m in default_modules()])


def test_import_contracts_hold_statically() -> None:
    linter = Path(sys.executable).with_name("lint-imports")
    if not linter.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    result = subprocess.run([str(linter)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_start_up_refuses_a_module_that_imports_another_modules_store(plant: Any) -> None:
    package, _ = plant(
        '"""Reaches past a boundary."""\n\nfrom app.modules.users.store import UsersStore\n'
    )

    with pytest.raises(BoundaryViolation) as refused:
        create_app(fast_settings(ephemeral="true"), [*default_modules(), planted_module(package)])

    message = str(refused.value)
    assert f"{package}/service.py:3 imports app.modules.users.store" in message
    assert "modules reach each other only through the bus" in message
    assert (
        "subscribe to UserRegistered, UserUpdated, UserDeleted from app.modules.users.contracts"
        in message
    )


@pytest.mark.parametrize(
    ("statement", "teaches"),
    [
        ("import app.gateway.errors", "modules never import the gateway"),
        ("from app.main import create_app", "modules never import the composition root"),
        ("from app.kernel.settings import Settings", "read settings from their context"),
        ("from app.modules.payments import service", "from app.modules.payments.contracts"),
        ("import app.runtime", "modules never import the runtime"),
    ],
)
def test_each_kind_of_crossing_is_named_with_what_to_do_instead(
    plant: Any, statement: str, teaches: str
) -> None:
    package, _ = plant(f"{statement}\n")
    with pytest.raises(BoundaryViolation, match=r"service\.py:1 imports") as refused:
        verify_boundaries([m.boundary for m in [*default_modules(), planted_module(package)]])
    assert teaches in str(refused.value)


def test_a_clean_module_starts(plant: Any) -> None:
    package, _ = plant(
        "from app.bus import Envelope\n"
        "from app.kernel.ids import new_id\n"
        "from app.modules.users.contracts import UserRegistered\n"
        "import sqlalchemy\n"
    )
    app = create_app(fast_settings(ephemeral="true"), [*default_modules(), planted_module(package)])
    assert "planted" in [m.module.name for m in app.state.runtime.modules]


def test_a_handler_cannot_be_given_another_modules_service(plant: Any) -> None:
    """Litestar refuses at start-up a dependency that the module's own router does not provide."""
    package, _ = plant('"""Clean imports."""\n')

    class Sneaky(Controller):
        path = "/"

        @get("/")
        async def peek(self, users: NamedDependency[Any]) -> str:
            return "got the users service"

    thief = planted_module(package, route_handlers=[Sneaky])
    with pytest.raises(ImproperlyConfiguredException, match="'users'"):
        create_app(fast_settings(ephemeral="true"), [*default_modules(), thief])


def test_no_route_reads_a_dependency_name_from_the_query() -> None:
    """The DI trap: an undeclared dependency becomes a query parameter (?users=evil)."""
    app = create_app(fast_settings(ephemeral="true"))
    injected = {name for m in app.state.runtime.modules for name in m.assembly.dependencies}
    for path, item in app.openapi_schema.to_schema()["paths"].items():
        for operation in item.values():
            names = {p["name"] for p in operation.get("parameters", [])}
            assert not names & injected, f"{path} exposes {names & injected} as parameters"


def test_a_module_is_handed_only_its_own_store_and_no_store_urls() -> None:
    app = create_app(fast_settings(ephemeral="true", users_db_url="sqlite+aiosqlite:///:memory:"))
    stores = [m.store for m in app.state.runtime.modules]
    assert len({id(s) for s in stores}) == len(stores)
    captured: list[ModuleContext] = []

    def spy(context: ModuleContext) -> Assembly:
        captured.append(context)
        return Assembly(route_handlers=[], dependencies={})

    create_app(
        fast_settings(ephemeral="true", users_db_url="sqlite+aiosqlite:///:memory:"),
        [planted_module("app.modules.notifications", name="spy", assemble=spy)],
    )
    [context] = captured
    assert context.settings.section_values.get("users_db_url") is None
    assert context.bus.module == "spy"


def test_topology_edges_are_exactly_the_declared_ones() -> None:
    app = create_app(fast_settings(ephemeral="true"))
    topology = topology_of(app, app.state.runtime)
    declared = {
        (producer.name, consumer.name, event.__name__)
        for producer in default_modules()
        for event in producer.publishes
        for consumer in default_modules()
        if event in consumer.subscribes
    }
    events = {(e.source, e.target, e.label) for e in topology.edges if e.kind == "event"}
    assert events == declared
    assert ("payments", "notifications", "PaymentSucceeded") in events
    assert {(e.source, e.target) for e in topology.edges if e.kind == "http"} == {
        ("gateway", m.name) for m in default_modules()
    }


def test_a_new_subscription_changes_the_diagram(plant: Any) -> None:
    package, _ = plant('"""Clean."""\n')

    def assemble(context: ModuleContext) -> Assembly:
        async def noted(event: PaymentSucceeded, envelope: Any) -> None:
            return None

        return Assembly(route_handlers=[], dependencies={}, handlers={PaymentSucceeded: noted})

    listener = planted_module(
        package, name="ledger", subscribes=(PaymentSucceeded,), assemble=assemble
    )
    before = create_app(fast_settings(ephemeral="true"))
    after = create_app(fast_settings(ephemeral="true"), [*default_modules(), listener])

    old = to_mermaid(topology_of(before, before.state.runtime))
    new = to_mermaid(topology_of(after, after.state.runtime))
    assert "payments -. PaymentSucceeded .-> ledger" not in old
    assert "payments -. PaymentSucceeded .-> ledger" in new


def test_topology_redacts_store_passwords() -> None:
    url = "postgresql+asyncpg://seams:hunter2@127.0.0.1:5432/seams_users"
    app = create_app(fast_settings(ephemeral="true", users_db_url=url))
    users = next(m for m in topology_of(app, app.state.runtime).modules if m.name == "users")
    assert "hunter2" not in users.store.url
    assert users.store.url == "postgresql+asyncpg://seams:***@127.0.0.1:5432/seams_users"


@pytest.mark.slow  # runs python -m app topology
def test_topology_command_prints_the_diagram() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app", "topology", "--format", "mermaid", "--ephemeral"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.startswith("flowchart LR")
    assert "orders -. OrderPlaced .-> payments" in result.stdout
