"""The package's layers: no import cycles, and no layer importing one above it.

Read from the source with `ast`, so an import inside a function or under TYPE_CHECKING
counts as much as one at the top of a module.
"""

import ast
from pathlib import Path

import fastapi_jobpoller

PACKAGE = Path(fastapi_jobpoller.__file__).resolve().parent
NAME = "fastapi_jobpoller"

# Bottom to top: a module may import modules of its own layer or of the layers below.
LAYERS = (
    ("base", {"config", "exceptions", "outcomes", "triggers", "models", "events", "_apscheduler"}),
    ("rules", {"_rules"}),
    ("storage", {"_storage"}),
    ("engine", {"_engine"}),
    (
        "facade",
        {
            "_poller_base",
            "_poll_methods",
            "_job_methods",
            "_habits",
            "_rows",
            "_health",
            "poller",
            "metrics",
        },
    ),
    ("http", {"http", "router"}),
    ("app", {"lifespan", "cli", "__main__"}),
    ("package", {"__init__"}),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join((NAME, *parts))


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for rank, (_, members) in enumerate(LAYERS):
        if top in members:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and the docs' map)")


def imports_of(path: Path) -> set[str]:
    """Return the package's modules that the file at `path` imports."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c.startswith(NAME) and c in MODULES)
    return found


MODULES = {module_name(path) for path in PACKAGE.rglob("*.py")}
GRAPH = {module_name(path): imports_of(path) for path in PACKAGE.rglob("*.py")}


def test_every_module_belongs_to_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_module_imports_a_higher_layer() -> None:
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} ({LAYERS[layer_of(target)][0]})"
        for module, targets in GRAPH.items()
        for target in targets
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_storage_and_engine_stay_below_what_uses_them() -> None:
    def imported_by(prefix: str) -> set[str]:
        return {t for m, targets in GRAPH.items() if m.startswith(prefix) for t in targets}

    storage = imported_by(f"{NAME}._storage")
    assert {t for t in storage if t.startswith((f"{NAME}._engine", f"{NAME}.http"))} == set()
    engine = imported_by(f"{NAME}._engine")
    assert {t for t in engine if t.startswith(f"{NAME}.http")} == set()


def test_the_import_graph_has_no_cycle() -> None:
    # A package imports its own submodules (re-exports); that is not a cycle.
    graph = {
        module: {t for t in targets if not t.startswith(f"{module}.")}
        for module, targets in GRAPH.items()
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import cycle: " + " -> ".join((*path, module))
        if module in done:
            return
        for target in graph[module]:
            visit(target, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_only_one_module_imports_apscheduler() -> None:
    importers = sorted(
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if "import apscheduler" in (text := path.read_text(encoding="utf-8"))
        or "from apscheduler" in text
    )
    assert importers == [f"{NAME}._apscheduler"]


def test_no_source_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def test_no_function_is_over_60_lines_outside_route_factories() -> None:
    # Route factories are declarative: one decorated endpoint after another.
    route_factories = {
        "get_jobs_router",
        "add_poll_routes",
        "add_job_routes",
        "add_history_routes",
        "add_quarantine_routes",
    }
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60 and node.name not in route_factories:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}")
    assert long == []
