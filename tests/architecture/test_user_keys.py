"""The keys sealing personal data are the users module's alone
(docs/decisions/0030-crypto-shredding.md): no other code names their table, no other module's
schema holds it, and other modules open sealed values only through the PersonalData they are
handed (the keyring the users module offers), never through its store."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import sqlalchemy as sa

from app.main import default_modules
from app.modules.users.store import user_keys

ROOT = Path(__file__).parents[2]
USERS = ROOT / "app" / "modules" / "users"
NAMES_THE_TABLE = re.compile(rf"\b{user_keys.name}\b")


def test_no_code_outside_the_users_module_names_the_keys_table() -> None:
    naming = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "app").rglob("*.py"))
        if USERS not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if NAMES_THE_TABLE.search(line)
    ]
    assert naming == [], "only the users module reads its keys: open sealed values via PersonalData"


def test_only_the_users_store_holds_the_keys_table() -> None:
    holders = set()
    for module in default_modules():
        package = Path(str(importlib.import_module(module.source_package).__file__)).parent
        for path in sorted(package.glob("*.py")):
            code = importlib.import_module(f"{module.source_package}.{path.stem}")
            for value in vars(code).values():
                if isinstance(value, sa.MetaData) and user_keys.name in value.tables:
                    holders.add(module.name)
    assert holders == {"users"}


def test_no_module_but_users_imports_its_keyring_or_store() -> None:
    importing = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "app" / "modules").rglob("*.py"))
        if USERS not in path.parents
        and re.search(r"app\.modules\.users\.(keys|store)\b", path.read_text())
    ]
    assert importing == []
