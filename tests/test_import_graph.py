"""The import graph of src/sessions, read with ``ast`` (every import, also
those inside functions): no package imports another that imports it back,
no module does, and the layers point one way (domain at the bottom, the
API above the projection, the wire module shared below both)."""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "sessions"  # the package's own __init__ (its version): below everything
GENERATED = "sessions.generated"  # the stubs: generated, not read here


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "sessions").rglob("*.py"):
        if "generated" in path.parts:
            continue
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: Iterable[str]) -> set[str]:
    """The modules of ``known`` that ``name`` imports."""
    known = set(known)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base_parts = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*base_parts, *([node.module] if node.module else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            if target.startswith(GENERATED):
                found.add(GENERATED)
                continue
            # "from sessions.api import convert" names the module convert.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target not in (name, ROOT):
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, found) for name, path in found.items()}


def package_of(module: str) -> str:
    """``sessions.api.convert`` -> ``sessions.api``; a top-level module is its own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in edges.get(node, ()):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in list(edges):
        if node not in index:
            visit(node)
    return found


def package_graph() -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph().items():
        source = package_of(module)
        packages.setdefault(source, set()).update(
            package_of(t) for t in targets if package_of(t) != source
        )
    return packages


def test_the_graph_is_read() -> None:
    edges = graph()
    # (a reader that found nothing would pass every test below)
    assert "sessions.wire" in edges["sessions.projection.fold"]
    assert "sessions.domain.session" in edges["sessions.wire"]


def test_no_package_imports_one_that_imports_it_back() -> None:
    assert cycles(package_graph()) == []


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert cycles(graph()) == []


def test_cycles_are_found_where_there_are_some() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_no_cycle_among_the_subpackages() -> None:
    subpackages = {
        package: {t for t in targets if t.count(".") == 1 and modules_are_packages(t)}
        for package, targets in package_graph().items()
        if modules_are_packages(package)
    }
    assert cycles(subpackages) == []


def modules_are_packages(name: str) -> bool:
    return (SRC / name.replace(".", "/") / "__init__.py").exists() or name == GENERATED


def test_layers_point_one_way() -> None:
    packages = package_graph()
    assert packages["sessions.domain"] == set()
    assert "sessions.api" not in packages["sessions.projection"]
    assert packages["sessions.wire"] <= {"sessions.domain", "sessions.generated"}
