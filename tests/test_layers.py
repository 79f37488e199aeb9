"""Imports point down only: launchers → workflows → makers → db → flywheel (core).

Every ``flywheel.*`` module is parsed (not imported) and each of its imports of
another flywheel module, at module level or inside a function, is mapped to a layer.
An import from a lower layer into a higher one fails, and so does any cycle among
modules (lazy imports included: a cycle that only works because one side imports
late is still a tangle).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: source folder → (package, layer rank; higher may import lower)
LAYERS = {
    "flywheel": ("flywheel", 0),
    "db": ("flywheel.db", 1),
    "makers": ("flywheel.makers", 2),
    "workflows": ("flywheel.workflows", 3),
    "launchers": ("flywheel.launchers", 4),
}


def modules() -> dict[str, Path]:
    """Every flywheel module name → its source file."""
    out = {}
    for folder, (package, _) in LAYERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def layer(module: str) -> int:
    """The rank of the layer ``module`` belongs to."""
    best = ("", 0)
    for package, rank in LAYERS.values():
        if (module == package or module.startswith(package + ".")) and len(
            package
        ) > len(best[0]):
            best = (package, rank)
    return best[1]


def imported(path: Path, known: dict[str, Path]) -> set[str]:
    """The flywheel modules ``path`` imports anywhere (``if TYPE_CHECKING:`` blocks
    excluded: they never run)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m in known}


def graph() -> dict[str, set[str]]:
    """Module → the flywheel modules it imports (packages' ``__init__`` included)."""
    known = modules()
    return {m: imported(p, known) - {m} for m, p in known.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(g):
        if v not in index:
            connect(v)
    return found


def test_the_walk_sees_every_layer():
    g = graph()
    assert {layer(m) for m in g} == {0, 1, 2, 3, 4}
    assert len(g) > 50
    # a lazy (function-level) import is seen: the round flow imports its stage Makers
    assert "flywheel.makers.filter.jobs" in g["flywheel.workflows.round"]
    assert "flywheel.workflows.recheck" in g["flywheel.launchers.local"]


def test_imports_point_down_only():
    g = graph()
    upward = sorted(
        f"{m} (layer {layer(m)}) imports {t} (layer {layer(t)})"
        for m, targets in g.items() for t in targets if layer(t) > layer(m)
    )
    assert upward == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_catch_what_they_look_for():
    """The checks themselves fail on an upward import and on a loop."""
    g = {"flywheel.db.a": {"flywheel.workflows.b"}, "flywheel.workflows.b": set()}
    assert [t for m, ts in g.items() for t in ts if layer(t) > layer(m)]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
