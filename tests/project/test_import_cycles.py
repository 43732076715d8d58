"""The package layout contract: no import cycle between modules or between packages, the core's
packages in layers, moved modules still importable by their old names but never used by them here.

Read from the source (nothing is imported for the graph), lazy imports inside functions included:
a lazy import still ties two modules together in a reader's head.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fvdesk.core import _moved as core_moved
from fvdesk.gui import _moved as gui_moved
from tests.project.import_graph import cycles, imported, module_graph, package_graph, sources

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "fvdesk"

#: The core's packages, lowest first: each imports only the ones before it (and the core's own
#: modules, ``fvdesk.core.errors`` and the like, which import none of them).
CORE_LAYERS = ("model", "optim", "dataset", "jobs", "output", "inspect", "actatlas")


def _graph() -> tuple[dict[str, set[str]], set[str]]:
    found = sources(PACKAGE)
    return module_graph(found), {m for m, (_, is_package) in found.items() if is_package}


def test_no_module_imports_itself_back() -> None:
    edges, _ = _graph()
    assert cycles(edges) == []


def test_no_package_imports_itself_back() -> None:
    edges, packages = _graph()
    assert cycles(package_graph(edges, packages)) == []


def test_core_packages_import_only_the_layers_below() -> None:
    edges, packages = _graph()
    graph = package_graph(edges, packages)
    layers = [f"fvdesk.core.{name}" for name in CORE_LAYERS]
    assert {p for p in packages if p.count(".") == 2 and p.startswith("fvdesk.core.")} == set(
        layers
    ), "a new core package needs its place in CORE_LAYERS"
    wrong = [
        f"{a} imports {b}"
        for i, a in enumerate(layers)
        for b in sorted(graph[a])
        if b.startswith("fvdesk.core.") and b not in layers[:i]
    ]
    wrong += [
        f"{m} imports {t}"
        for m, targets in edges.items()
        if m.startswith("fvdesk.core.") and m.count(".") == 2 and m not in packages
        for t in sorted(targets)
        if any(t == p or t.startswith(p + ".") for p in layers)
    ]
    assert wrong == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
        ({"a": {"b"}, "b": set(), "c": {"b"}}, []),
        ({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]]),
    ],
)
def test_the_cycle_check_can_fail(edges: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert sorted(cycles(edges)) == expected


def test_the_package_check_sees_a_cycle_through_different_modules() -> None:
    """dataset.a imports optim.b and optim.c imports dataset.d: no module cycle, a package one."""
    sources = {
        "p": ("", True),
        "p.dataset": ("", True),
        "p.optim": ("", True),
        "p.dataset.a": ("from p.optim.b import x", False),
        "p.dataset.d": ("", False),
        "p.optim.b": ("", False),
        "p.optim.c": ("def f():\n    from ..dataset import d", False),
    }
    edges = module_graph(sources)
    assert cycles(edges) == []
    packages = {"p", "p.dataset", "p.optim"}
    assert cycles(package_graph(edges, packages)) == [["p.dataset", "p.optim"]]


OLD_NAMES = {**core_moved.MOVED, **gui_moved.MOVED}


def test_nothing_here_imports_a_module_by_its_old_name() -> None:
    """The old names work for scripts (below), not for fvdesk's own code, tests, tools or docs."""
    skip = {PACKAGE / "core" / "_moved.py", PACKAGE / "gui" / "_moved.py", Path(__file__)}
    hits = []
    for folder in ("fvdesk", "tests", "tools", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if path.resolve() in skip:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            hits += [
                f"{path.relative_to(ROOT)}: {n}"
                for n in imported(tree, module, path.name == "__init__.py")
                if n in OLD_NAMES
            ]
    spelled = [n for old in OLD_NAMES for n in (old, old.replace(".", "/") + ".py")]
    mention = re.compile("|".join(re.escape(n) + r"\b" for n in spelled))
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        hits += [
            f"{path.relative_to(ROOT)}: {m.group(0)}" for m in mention.finditer(path.read_text())
        ]
    assert hits == []


def test_old_core_names_warn_and_are_the_moved_modules() -> None:
    code = (
        "import importlib, sys, warnings\n"
        "from fvdesk.core import _moved\n"
        "for old, new in _moved.MOVED.items():\n"
        "    with warnings.catch_warnings(record=True) as w:\n"
        "        warnings.simplefilter('always')\n"
        "        module = importlib.import_module(old)\n"
        "    assert module is importlib.import_module(new), old\n"
        "    assert module.__spec__.name == new, old\n"
        "    assert any(issubclass(x.category, DeprecationWarning) for x in w), old\n"
        "from fvdesk.core.optim.run import run_job\n"
        "from fvdesk.core.dataset import folder\n"
        "assert run_job.__module__ == 'fvdesk.core.jobs.run'\n"
        "assert folder is sys.modules['fvdesk.core.imagefolder']\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    assert out.stdout.strip() == "ok", out.stderr[-2000:]


def test_every_package_is_installed() -> None:
    """setuptools installs only the packages pyproject.toml lists: a new folder must be there.
    (Read with a pattern: ``tomllib`` is Python 3.11+, and fvdesk runs on 3.10.)"""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    block = re.search(r"^packages = \[(.*?)\]", text, re.M | re.S)
    assert block is not None
    listed = set(re.findall(r'"([\w.]+)"', block.group(1)))
    present = {".".join(p.parent.relative_to(ROOT).parts) for p in PACKAGE.rglob("__init__.py")}
    assert "fvdesk.gui.canvas" in present and present <= listed, present - listed
