"""Every module under app/ imports on its own, first, in a fresh interpreter: no import cycle
hides behind the order in which the tests or the app happen to import things."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"

# One interpreter loads the libraries once (the slow part), then forks a child per module:
# each child starts with no app module imported and imports just the one it is given.
IMPORT_EACH_ALONE = """
import importlib, os, sys
for library in ("litestar", "sqlalchemy", "msgspec", "prometheus_client", "opentelemetry.trace"):
    importlib.import_module(library)
assert not [name for name in sys.modules if name == "app" or name.startswith("app.")]
failed = 0
for name in sys.argv[1:]:
    child = os.fork()
    if child == 0:
        try:
            importlib.import_module(name)
        except BaseException as error:
            print(f"{name}: {type(error).__name__}: {error}", flush=True)
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    failed += status != 0
sys.exit(1 if failed else 0)
"""


def app_modules() -> list[str]:
    names = []
    for path in sorted(APP.rglob("*.py")):
        parts = path.relative_to(APP.parent).with_suffix("").parts
        if parts[-2:] == ("migrations", "env"):
            # An Alembic environment is a script Alembic runs inside its own context
            # (docs/decisions/0028-migrations.md), not a module anything imports.
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.slow  # a fresh interpreter per module
def test_every_module_imports_alone_in_a_fresh_interpreter() -> None:
    modules = app_modules()
    assert "app.kernel.sql" in modules and "app.main" in modules
    assert any(".migrations.versions." in name for name in modules)  # revisions are checked
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH_ALONE, *modules],
        capture_output=True,
        text=True,
        cwd=APP.parent,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, (
        "modules that fail to import alone:\n" + result.stdout + result.stderr
    )
