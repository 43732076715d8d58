"""The project stays ruff-clean (lint and format), checked like any other regression."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["fvdesk", "tests", "tools", "benchmarks"]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("ruff")
    if not found:
        pytest.fail("ruff is part of the test extra but is not installed")
    return [found]


@pytest.mark.parametrize("args", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_clean(args: list[str]) -> None:
    present = [t for t in TARGETS if (ROOT / t).exists()]
    out = subprocess.run([*_ruff(), *args, *present], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_package_is_installed() -> None:
    """pyproject lists packages by hand; a new subpackage left out would vanish from wheels/bundles."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    listed = set(
        tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    found = {
        ".".join(p.parent.relative_to(root).parts) for p in (root / "fvdesk").rglob("__init__.py")
    }
    assert found <= listed, sorted(found - listed)
