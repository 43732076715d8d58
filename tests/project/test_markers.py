"""Tests are marked by where they live (tests/conftest.py ``markers_for``), and CI runs them all."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import NO_GPU, markers_for

TESTS = Path(__file__).resolve().parent
while TESTS.name != "tests":
    TESTS = TESTS.parent
ROOT = TESTS.parent
WIDGETS = re.compile(r"^\s*(from PySide6|import PySide6)|\bqtbot\b", re.M)


def _test_files() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def test_the_rules() -> None:
    assert markers_for("tests/gui/canvas/test_tiles.py") == {"gui"}
    assert markers_for("tests/test_gui_anything_new.py") == {"gui"}  # not laid out yet
    assert markers_for("tests/integration/test_readme.py") == {"integration"}
    assert markers_for(Path("tests", "test_selftest.py")) == {"integration"}
    assert markers_for("tests/integration/test_gpu.py") == {"integration", "gpu"}
    assert markers_for("tests/core/model/test_loader.py") == set()
    assert markers_for("tests/cli/test_cli.py") == set()


def test_every_file_that_builds_widgets_is_marked_gui() -> None:
    unmarked = [
        str(p.relative_to(ROOT))
        for p in _test_files()
        if WIDGETS.search(p.read_text(encoding="utf-8")) and "gui" not in markers_for(p)
    ]
    assert not unmarked, f"these build Qt widgets but are not gui tests: {unmarked}"


def test_every_file_in_a_marked_folder_gets_its_marker() -> None:
    for p in _test_files():
        parts = p.relative_to(TESTS).parts[:-1]
        for name in ("gui", "integration"):
            if name in parts:
                assert name in markers_for(p), p


def _collect(*args: str) -> list[str]:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode in (0, 5), proc.stdout + proc.stderr  # 5: nothing selected
    return [line for line in proc.stdout.splitlines() if "::" in line]


def test_collected_items_carry_the_markers() -> None:
    """A real collection: ``-m`` selects a gui file's and an integration file's tests, and
    not this (unmarked) file's."""
    files = _test_files()
    gui = next(p for p in files if markers_for(p) == {"gui"})
    integration = next(p for p in files if markers_for(p) == {"integration"})
    here = Path(__file__).resolve()
    rel = [str(p.relative_to(ROOT)) for p in (gui, integration, here)]
    for marker, wanted in (("gui", rel[0]), ("integration", rel[1])):
        ids = _collect("-m", marker, *rel)
        assert ids and all(i.startswith(wanted + "::") for i in ids), (marker, ids)
    assert len(_collect("-m", "not gui and not integration and not gpu", *rel)) == len(
        _collect(rel[2])
    )


def test_gpu_tests_skip_without_cuda_and_say_why() -> None:
    import torch

    gpu = next(p for p in _test_files() if "gpu" in markers_for(p))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", str(gpu)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if torch.cuda.is_available():
        assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout
    else:
        assert NO_GPU in proc.stdout and " passed" not in proc.stdout, proc.stdout


def test_ci_runs_every_marker() -> None:
    """CI runs the README's plain ``pytest -q``: nothing deselects a marker by default."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"-m pytest -q\s*$", ci, re.M), "CI should run the whole suite"
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    addopts = re.findall(r"^addopts\s*=.*$", pyproject, re.M)
    assert not any(re.search(r"(^|\s|\")-m\b", a) for a in addopts), addopts
