"""The layers ARCHITECTURE.md draws, held against the code's own imports (read with ast).

A newcomer who adds an import that breaks a layer (the REST client reading dorch's config, a
bus importing the CLI, the product importing its test emulator) hears it from here, with the
file and the import named.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PRODUCT = REPO / "dorch"
EMULATOR = REPO / "emulator" / "dorch_emulator"


def _module(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path, top_level_only: bool = False) -> set[str]:
    """Every module PATH imports (``from a import b`` counts as a.b when a.b is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _tree(root: Path) -> dict[str, Path]:
    return {_module(p, root): p for p in sorted(root.rglob("*.py"))}


PRODUCT_MODULES = _tree(PRODUCT)
EMULATOR_MODULES = _tree(EMULATOR)


def _offenders(modules: dict[str, Path], root: Path, allowed: Callable[[str], bool],
               which: Callable[[str], bool]) -> list[str]:
    """Imports of dorch or the emulator, by the modules WHICH picks, that ALLOWED refuses."""
    bad = []
    for name, path in modules.items():
        if not which(name):
            continue
        for imported in sorted(_imports(path, root)):
            if imported.split(".")[0] in ("dorch", "dorch_emulator") and not allowed(imported):
                bad.append(f"{path.relative_to(REPO)} imports {imported}")
    return bad


def test_the_product_and_the_emulator_import_nothing_of_each_other() -> None:
    assert _offenders(PRODUCT_MODULES, PRODUCT, lambda m: not m.startswith("dorch_emulator"),
                      lambda n: True) == []
    assert _offenders(EMULATOR_MODULES, EMULATOR, lambda m: m.startswith("dorch_emulator"),
                      lambda n: True) == []


def test_the_rest_client_is_a_leaf() -> None:
    """dorch/discord/ knows HTTP and Discord, not dorch's config, paths, log, buses or outbox."""
    allowed = ("dorch.discord", "dorch.errors", "dorch.shared_state")
    assert _offenders(PRODUCT_MODULES, PRODUCT,
                      lambda m: m == "dorch" or m == "dorch.__version__" or m.startswith(allowed),
                      lambda n: n.startswith("dorch.discord")) == []


def test_only_the_cli_and_the_entry_point_import_the_cli() -> None:
    assert _offenders(PRODUCT_MODULES, PRODUCT, lambda m: not m.startswith("dorch.cli"),
                      lambda n: not n.startswith(("dorch.cli", "dorch.main"))) == []


def test_the_model_and_the_errors_import_nothing_of_dorch_but_each_other() -> None:
    assert _offenders(PRODUCT_MODULES, PRODUCT, lambda m: m.startswith(("dorch.errors", "dorch.model")),
                      lambda n: n in ("dorch.errors", "dorch.model")) == []


def test_executors_and_the_runtime_below_the_worker_import_no_bus() -> None:
    """Executors, the sandbox and the workspace speak the domain model, not a bus."""
    below = ("dorch.executors", "dorch.runtime.process", "dorch.runtime.sandbox",
             "dorch.runtime.workspace", "dorch.runtime.reaper")
    assert _offenders(PRODUCT_MODULES, PRODUCT, lambda m: not m.startswith("dorch.bus"),
                      lambda n: n.startswith(below)) == []


def test_no_import_cycle_at_module_level() -> None:
    graph = {name: {m for m in _imports(path, PRODUCT, top_level_only=True) if m in PRODUCT_MODULES
                    and m != name and not name.startswith(m + ".")}
             for name, path in PRODUCT_MODULES.items()}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)
