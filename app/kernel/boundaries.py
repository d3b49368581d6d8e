"""The boundary check the composition root runs before anything starts.

It reads each module's source (ast, no import side effects) and refuses an import that
crosses a boundary, with a message that teaches: where, which rule, what to do instead.
The same rules are checked statically in CI by import-linter (pyproject.toml).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.kernel.errors import BoundaryViolation

SHARED = ("app.bus", "app.kernel", "app.modules.spec")  # what every module may import
OFF_LIMITS = {
    "app.gateway": "modules never import the gateway: it calls them, not the other way round",
    "app.main": "modules never import the composition root: it wires them",
    "app.runtime": "modules never import the runtime: the composition root hands them a context",
    "app.__main__": "modules never import the command line",
    "app.kernel.settings": "modules read settings from their context, not the loader",
}


@dataclass(frozen=True)
class ModuleSource:
    """What the check needs to know of a module: its name, package and published events."""

    name: str
    package: str
    events: Sequence[str]


@dataclass(frozen=True)
class Crossing:
    path: Path
    line: int
    target: str  # what is imported, as precisely as the statement says
    source: str  # the module the statement names, which is what a reader looks for


def verify_boundaries(modules: Sequence[ModuleSource], root: Path | None = None) -> None:
    """Raise BoundaryViolation listing every import that crosses a boundary."""
    problems: dict[str, None] = {}  # ordered and without repeats: one line per statement
    packages = {"app", "app.modules", *(m.package for m in modules)}
    for module in modules:
        for crossing in _imports(module.package):
            reason = _judge(module, crossing.target, modules)
            if reason is not None:
                where = _display(crossing.path, root)
                shown = crossing.target if crossing.source in packages else crossing.source
                problems[f"{where}:{crossing.line} imports {shown} — {reason}"] = None
    if problems:
        raise BoundaryViolation("\n".join(problems))


def _judge(module: ModuleSource, target: str, modules: Sequence[ModuleSource]) -> str | None:
    if _within(target, module.package):
        return None
    for forbidden, reason in OFF_LIMITS.items():
        if _within(target, forbidden):
            return reason
    if any(_within(target, shared) for shared in SHARED):
        return None
    owner = _owner(target, modules)
    if owner is not None:
        if _within(target, f"{owner}.contracts") or target == owner:
            return None
        known = next((m for m in modules if m.package == owner), None)
        events = ", ".join(known.events) if known and known.events else "its events"
        return (
            f"modules reach each other only through the bus; subscribe to {events} from "
            f"{owner}.contracts and keep what you need in your own store"
        )
    if _within(target, "app"):
        return (
            "a module imports only its own package, app.bus, app.kernel and other modules' "
            "contracts; move what you need into app.kernel if every module may share it"
        )
    return None


def _owner(target: str, modules: Sequence[ModuleSource]) -> str | None:
    """The module package an import reaches into, registered or not."""
    for other in modules:
        if _within(target, other.package):
            return other.package
    parts = target.split(".")
    if len(parts) >= 3 and parts[:2] == ["app", "modules"]:
        return ".".join(parts[:3])
    return None


def _imports(package: str) -> Iterator[Crossing]:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BoundaryViolation(f"module package {package!r} cannot be found")
    for folder in spec.submodule_search_locations:
        for path in sorted(Path(folder).rglob("*.py")):
            here = _module_name(package, Path(folder), path)
            yield from _file_imports(path, path.stat().st_mtime_ns, here)


@functools.lru_cache(maxsize=1024)
def _file_imports(path: Path, _mtime_ns: int, here: str) -> tuple[Crossing, ...]:
    """Read once per file version: tests build many apps from the same sources."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Crossing] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(Crossing(path, node.lineno, a.name, a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, here, path.name == "__init__.py")
            for alias in node.names:
                # `from app.modules.users import store` imports app.modules.users.store
                target = base if alias.name == "*" else f"{base}.{alias.name}"
                found.append(Crossing(path, node.lineno, target, base))
    return tuple(found)


def _absolute(node: ast.ImportFrom, here: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    parts = here.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    base = ".".join(parts[:keep])
    return f"{base}.{node.module}" if node.module else base


def _module_name(package: str, folder: Path, path: Path) -> str:
    relative = path.relative_to(folder).with_suffix("")
    parts = [p for p in relative.parts if p != "__init__"]
    return ".".join([package, *parts])


def _within(target: str, package: str) -> bool:
    return target == package or target.startswith(f"{package}.")


def _display(path: Path, root: Path | None) -> str:
    base = root or Path.cwd()
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)
