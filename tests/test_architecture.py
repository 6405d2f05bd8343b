"""The import arrows of the README's architecture section: apps import only downwards, and no
two modules of the product import each other (directly or through others).

Floors: election_monitor (1) < elections, protocols (2) < metrics, forensics (3) <
dashboard, alerts (4). A module may import its own app or a lower floor (and protocols may
import elections, see SIDEWAYS); the project's
composition root (settings, urls, the API root, Celery app) wires every app together.
Tests and migrations are not product code and are not checked.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOORS = {
    "election_monitor": 1,
    "elections": 2,
    "protocols": 2,
    "metrics": 3,
    "forensics": 3,
    "dashboard": 4,
    "alerts": 4,
}
COMPOSITION_ROOT = {"election_monitor.settings", "election_monitor.urls", "election_monitor.api_root"}
# Observed data beside elections that is about elections' constituencies: a protocol belongs to
# a constituency and creates missing ones through the elections write path. One direction
# only: elections importing protocols is still an upward (sideways) import and fails.
# Forensics reconciles stream and protocol with the metrics' own mismatch rule (one home).
SIDEWAYS = {("protocols", "elections"), ("forensics", "metrics")}


def product_modules() -> dict[str, Path]:
    found = {}
    for app in FLOORS:
        for path in (ROOT / app).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if "tests" in parts or "migrations" in parts:
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(path: Path, name: str) -> set[str]:
    """Every module imported anywhere in the file, function bodies included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_apps_import_only_their_own_floor_or_lower():
    modules = product_modules()
    upward = []
    for name, path in modules.items():
        if name in COMPOSITION_ROOT:
            continue
        app = name.split(".")[0]
        for imported in imports_of(path, name):
            target = imported.split(".")[0]
            if target in FLOORS and target != app and FLOORS[target] >= FLOORS[app] and (app, target) not in SIDEWAYS:
                upward.append(f"{name} imports {imported}")
    assert upward == []


def test_no_import_cycles_between_product_modules():
    modules = product_modules()
    graph = {
        name: {imported for imported in imports_of(path, name) if imported in modules and imported != name}
        for name, path in modules.items()
    }
    cycles = []

    def visit(node, trail, on_trail, done):
        on_trail.add(node)
        trail.append(node)
        for neighbour in sorted(graph[node]):
            if neighbour in on_trail:
                cycles.append(" -> ".join([*trail[trail.index(neighbour) :], neighbour]))
            elif neighbour not in done:
                visit(neighbour, trail, on_trail, done)
        trail.pop()
        on_trail.discard(node)
        done.add(node)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [], set(), done)
    assert cycles == []


def test_the_checker_sees_an_upward_import(tmp_path):
    """The checks above would pass vacuously if imports were not found: prove they are."""
    module = tmp_path / "models.py"
    module.write_text("from metrics.cache import metrics_cache\n\ndef f():\n    from metrics import tasks\n")
    assert {"metrics.cache", "metrics.cache.metrics_cache", "metrics", "metrics.tasks"} <= imports_of(
        module, "elections.models"
    )
