"""The package's layering: no import circles between gdpo modules, and a math core free of IO.

Every import counts, including those inside functions (a lazy import still ties two modules
together) and those under ``if TYPE_CHECKING:`` (a type-only circle is still a circle of design). ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg``. A module importing its own parent package
is not an edge (Python imports parents first anyway).
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = ("gdpo.advantage_core", "gdpo.advantages_successors", "gdpo.advantages", "gdpo.reference", "gdpo.analysis")  # the pure math core (numpy; torch tensors pass through)
CORE_FORBIDDEN = ("transformers", "yaml", "json", "os", "pathlib", "gdpo.train", "gdpo.data",
                  "gdpo.rewards", "gdpo.eval", "gdpo.reports", "gdpo.rollout", "gdpo.integrations")


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "gdpo").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(tree: ast.AST, this: str, is_package: bool) -> list[tuple[str, list[str]]]:
    found = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = this.split(".") if is_package else this.split(".")[:-1]
                    anchor = anchor[: len(anchor) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found.append((base, [alias.name for alias in child.names]))
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """gdpo module -> the gdpo modules it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        for base, names in _imports(tree, name, path.name == "__init__.py"):
            targets = [f"{base}.{n}" for n in names if f"{base}.{n}" in modules] or [base]
            for target in targets:
                while target and target not in modules:  # gdpo.x.y.attr -> gdpo.x.y
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return out


def test_cycle_finder_sees_a_two_module_circle():
    # a -> b -> a is one circle; c -> a is not part of it
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_circles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles (move the shared piece down a layer): " + "; ".join(
        " <-> ".join(c) for c in cycles)


def test_math_core_imports_no_io_and_no_outer_layer():
    modules = _modules()
    for name in CORE:
        tree = ast.parse(modules[name].read_text())
        for base, _ in _imports(tree, name, False):
            assert not any(base == f or base.startswith(f + ".") for f in CORE_FORBIDDEN), f"{name} imports {base}: keep the math core pure"
