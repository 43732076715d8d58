"""Import graphs read from source (nothing is imported): what tests/project/test_import_cycles.py and
tests/gui/test_gui_layers.py check.  Lazy imports inside functions count."""

from __future__ import annotations

import ast
from pathlib import Path


def modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imported(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def module_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """``module -> (source, is_package)`` -> ``module -> the modules of sources it imports``.

    An imported name resolves to the longest module it names (``from a import b`` is ``a.b``
    when that is a module, else ``a``); a module importing its own parent package is no edge."""
    edges: dict[str, set[str]] = {m: set() for m in sources}
    for module, (source, is_package) in sources.items():
        for name in imported(ast.parse(source), module, is_package):
            while name and name not in sources:
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):
                edges[module].add(name)
    return edges


def package_graph(edges: dict[str, set[str]], packages: set[str]) -> dict[str, set[str]]:
    """Edges between the packages that hold the modules; a package and its sub-packages are one
    neighbourhood (``fvdesk.core`` and ``fvdesk.core.optim`` never make a cycle)."""

    def home(m: str) -> str:
        return m if m in packages else m.rpartition(".")[0]

    out: dict[str, set[str]] = {p: set() for p in packages}
    for module, targets in edges.items():
        a = home(module)
        for target in targets:
            b = home(target)
            if a != b and not a.startswith(b + ".") and not b.startswith(a + "."):
                out.setdefault(a, set()).add(b)
    return out


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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
    return found


def sources(root: Path) -> dict[str, tuple[str, bool]]:
    """``module -> (source, is_package)`` for every module under the package folder ``root``."""
    return {
        m: (p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for m, p in modules(root).items()
    }
