"""The import graph of app/ and roles/, read from the source (ast), not by importing anything.

Every import counts, the ones inside functions too (a lazy import is still a dependency).
`python -m tests.importgraph` prints the graph between app's parts (its subpackages and top-level
modules) and the module sizes; tests/test_layout.py fails on a cycle or an oversized module.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "roles")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((PROJECT / pkg).rglob("*.py"))}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (`app.db.batches.add_batch` -> `app.db.batches`)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `path` imports. `from pkg import name` counts as importing pkg.name when
    that is a module, else pkg; a package's own __init__ is not counted for its submodules (Python
    runs it first, but an empty one depends on nothing)."""
    own = module_name(path)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = own.split(".") if is_package else own.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for target in targets:
            resolved = _resolve(target, known)
            if resolved and resolved != own:
                found.add(resolved)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def part(module: str) -> str:
    """app's part a module belongs to: its subpackage (`app.mail`) or itself (`app.settings`)."""
    pieces = module.split(".")
    return ".".join(pieces[:2])


def part_graph(edges: dict[str, set[str]], package: str = "app") -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for src, dsts in edges.items():
        if not src.startswith(package + ".") :
            continue
        s = part(src)
        out.setdefault(s, set())
        out[s] |= {part(d) for d in dsts if d.startswith(package + ".") and part(d) != s}
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def transitive(edges: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def sizes() -> dict[str, int]:
    return {str(p.relative_to(PROJECT)): len(p.read_text().splitlines()) for p in modules().values()}


def main() -> None:
    edges = graph()
    for src, dsts in sorted(part_graph(edges).items()):
        print(f"{src:22} -> {', '.join(sorted(dsts)) or '-'}")
    print("cycles between modules:", cycles(edges) or "none")
    print("cycles between app's parts:", cycles(part_graph(edges)) or "none")
    for path, n in sorted(sizes().items(), key=lambda kv: -kv[1]):
        if n > 250:
            print(f"{n:5} {path}")


if __name__ == "__main__":
    main()
