"""The app's layout contract: which sub-package of ``fvdesk.gui`` may import which.

Features (the layer tree, the article's views, dataset examples, galleries) never import each
other; only the shell wires them.  They share the runtime (background work, the session, the job
controller), the settings dock and the canvas, which sit below them; the canvas is the lowest and
imports no other part of the app.  Lazy imports inside functions count: the scan is of the
source, not of what an import happened to load.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

import pytest

from tests.project.import_graph import imported, sources

ROOT = Path(__file__).resolve().parents[2]
GUI = ROOT / "fvdesk" / "gui"

SHARED = {"canvas", "settings", "runtime"}
FEATURES = {"tree", "article", "dataset", "galleries", "inspect", "actatlas"}
#: package -> the other packages of ``fvdesk.gui`` it may import ("" is the package's own root
#: modules: ``app``, the entry point, and ``_moved``, the old names)
ALLOWED: dict[str, set[str]] = {
    "canvas": set(),
    "settings": set(),
    "runtime": {"canvas", "settings"},
    **{feature: set(SHARED) for feature in FEATURES},
    "shell": SHARED | FEATURES,
    "": SHARED | FEATURES | {"shell"},
}


def _package_of(module: str) -> str:
    """``fvdesk.gui.canvas.tiles`` (and ``fvdesk.gui.canvas``) -> ``canvas``; the package's own
    root modules (``fvdesk.gui.app``) -> ``""``."""
    parts = module.split(".")[2:]
    return parts[0] if parts and (GUI / parts[0]).is_dir() else ""


def layer_violations(found: dict[str, tuple[str, bool]]) -> list[str]:
    """``module -> (source, is_package)`` -> one line per import the layering forbids."""
    out = []
    for module, (source, is_package) in sorted(found.items()):
        mine = _package_of(module)
        for target in imported(ast.parse(source), module, is_package):
            if not target.startswith("fvdesk.gui.") or target not in found:
                continue
            theirs = _package_of(target)
            if theirs != mine and theirs not in ALLOWED.get(mine, set()):
                out.append(f"{module} ({mine or 'root'}) imports {target} ({theirs or 'root'})")
    return out


def _gui_sources() -> dict[str, tuple[str, bool]]:
    return {m: s for m, s in sources(GUI.parent).items() if m.startswith("fvdesk.gui")}


def test_every_sub_package_has_a_place_in_the_layering() -> None:
    packages = {p.name for p in GUI.iterdir() if (p / "__init__.py").exists()}
    assert packages == set(ALLOWED) - {""}


def test_features_never_import_each_other_and_shared_layers_never_import_up() -> None:
    assert layer_violations(_gui_sources()) == []


def test_every_gui_import_names_a_module_or_a_name_that_exists() -> None:
    """An import of a module path that is not there (an old ``qt_*`` name) fails here even
    though the old names still import (with a warning) for scripts."""
    sources = _gui_sources()
    stale = []
    for module, (source, _) in sources.items():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fvdesk.gui"):
                if node.module not in sources:
                    stale.append(f"{module}: from {node.module}")
            elif isinstance(node, ast.Import):
                stale += [
                    f"{module}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("fvdesk.gui.") and a.name not in sources
                ]
    assert stale == []


@pytest.mark.parametrize(
    ("module", "source", "bad"),
    [
        ("fvdesk.gui.article.x", "from fvdesk.gui.dataset.y import Z", True),  # feature -> feature
        ("fvdesk.gui.article.x", "def f():\n    import fvdesk.gui.tree.y", True),  # lazy, too
        ("fvdesk.gui.canvas.x", "from fvdesk.gui.runtime import y", True),  # shared -> up
        ("fvdesk.gui.runtime.x", "from fvdesk.gui.shell.y import Z", True),
        ("fvdesk.gui.dataset.x", "from ..galleries.y import Z", True),  # relative
        ("fvdesk.gui.article.x", "from fvdesk.gui.runtime.y import Z", False),
        ("fvdesk.gui.shell.x", "from fvdesk.gui.dataset.y import Z", False),
        ("fvdesk.gui.article.x", "from .y import Z", False),  # its own package
        ("fvdesk.gui.article.x", "from fvdesk.gui.canvas import tiles", False),  # a package
        ("fvdesk.gui.canvas.x", "from fvdesk.gui import shell", True),
    ],
)
def test_the_layer_check_can_fail(module: str, source: str, bad: bool) -> None:
    package = ".".join(module.split(".")[:3])
    target = next(
        t
        for t in imported(ast.parse(source), module, False)
        if t.startswith("fvdesk.gui.") and t != package
    )
    found = {module: (source, False), target: ("", False)}
    assert bool(layer_violations(found)) is bad


def test_an_old_module_name_warns_and_is_the_moved_module() -> None:
    import importlib

    from fvdesk.gui import _moved
    from fvdesk.gui.canvas import tiles

    for old, new in _moved.MOVED.items():
        assert (ROOT / Path(*new.split("."))).with_suffix(".py").is_file(), (old, new)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("fvdesk.gui.qt_tiles")
    assert old is tiles and tiles.__spec__.name == "fvdesk.gui.canvas.tiles"
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
