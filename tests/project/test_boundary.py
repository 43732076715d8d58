"""The architecture contract: the core and the headless CLI never import Qt."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QT_PREFIXES = ("PySide6", "PyQt5", "PyQt6", "PySide2", "shiboken6", "qtpy")


def _qt_modules_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport sys\n"
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {QT_PREFIXES!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    return (
        [m for m in out.stdout.strip().splitlines()[-1].split(",") if m]
        if out.stdout.strip()
        else []
    )


@pytest.mark.parametrize(
    "code",
    [
        "import fvdesk.core",
        # Every core module, including the heavy ones, imported for real.
        "import importlib, pkgutil, fvdesk.core as c\n"
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(c.__path__, 'fvdesk.core.')]",
        "import fvdesk.cli",
        "from fvdesk.cli import main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "    main(['layers', '--json'])",
    ],
    ids=["core", "all-core-modules", "cli-import", "cli-layers"],
)
def test_no_qt_imported(code: str) -> None:
    assert _qt_modules_after(code) == []


def test_core_source_has_no_qt_imports() -> None:
    """A static check too, so a lazily imported Qt module inside a function is caught."""
    offenders = []
    for path in sorted((ROOT / "fvdesk" / "core").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in QT_PREFIXES]
    assert offenders == []


def test_the_boundary_check_can_fail() -> None:
    """Guard against a probe that always reports nothing."""
    assert "PySide6" in _qt_modules_after("import PySide6.QtCore")


def test_walk_reaches_every_core_package() -> None:
    """The all-core-modules probe must import the subpackages' modules, not only the top level."""
    import pkgutil

    import fvdesk.core as c

    names = {m.name for m in pkgutil.walk_packages(c.__path__, "fvdesk.core.")}
    assert {
        "fvdesk.core.optim.render",
        "fvdesk.core.model.loader",
        "fvdesk.core.output.gallery",
    } <= names


@pytest.mark.parametrize(
    "module",
    [
        "fvdesk.core.optim.events",
        "fvdesk.core.optim.settings",
        "fvdesk.core.model.preprocessing",
        "fvdesk.core.model.layers",
    ],
)
def test_plain_data_modules_do_not_import_torch(module: str) -> None:
    """The app type-checks events and builds settings before (and without) loading the engine."""
    out = subprocess.run(
        [sys.executable, "-c", f"import sys, {module}; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=True,
    )
    assert out.stdout.strip() == "False"


def test_public_core_names_resolve() -> None:
    import fvdesk.core as c

    for name in c.__all__:
        assert getattr(c, name) is not None, name
