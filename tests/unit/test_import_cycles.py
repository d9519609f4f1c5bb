"""No two modules of overnight import each other, however indirectly.

Imports point down the pipeline (api → service → domain/runner → store,
blobs); a cycle means two modules that can only change together. The graph
is read from the source with `ast`, so an import under `TYPE_CHECKING` or
inside a function counts too: hiding a cycle from the interpreter does not
remove it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import overnight

PACKAGE = Path(overnight.__file__).parent


def module_files() -> dict[str, tuple[Path, bool]]:
    """Every module's dotted name, with its file and whether it is a package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["overnight", *path.relative_to(PACKAGE).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


def imported_by(path: Path, name: str, is_package: bool, known: set[str]) -> set[str]:
    """The overnight modules one module imports (`from a import b` names the
    module `a.b` when there is one, else `a`)."""
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    known = set(modules)
    return {
        name: imported_by(path, name, is_package, known)
        for name, (path, is_package) in modules.items()
    }


def cycles(graph: dict[str, set[str]]) -> Iterator[list[str]]:
    """The strongly connected components of more than one module (Tarjan's
    algorithm, iterative), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        yield sorted(component)


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "overnight.runner.flushing" in graph["overnight.runner.executor"]
    assert "overnight.domain.lines" in graph["overnight.runner.reading"]


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "d"}, "e": set()}
    assert list(cycles(graph)) == [["a", "b", "c"]]


def test_no_module_imports_itself_back() -> None:
    assert list(cycles(import_graph())) == []
