"""mypy over ``fvdesk/`` (configured in pyproject.toml): any error fails, and so does a
``type: ignore`` that is no longer needed or says neither its error code nor why."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
while not (ROOT / "pyproject.toml").is_file():
    ROOT = ROOT.parent

pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")


def test_the_package_type_checks() -> None:
    """mypy's incremental cache (.mypy_cache, git-ignored) makes a re-run take seconds."""
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    errors = [line for line in proc.stdout.splitlines() if ": error:" in line]
    assert proc.returncode == 0 and not errors, "mypy found errors:\n" + (proc.stdout + proc.stderr)


IGNORE = re.compile(r"#\s*type:\s*ignore(?P<codes>\[[^\]]*\])?(?P<rest>.*)$")


def test_every_remaining_ignore_has_a_code_and_a_reason() -> None:
    bare = []
    for path in sorted((ROOT / "fvdesk").rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = IGNORE.search(line)
            if m is None:
                continue
            rest = m.group("rest").replace("# fmt: skip", "").strip()
            above = path.read_text(encoding="utf-8").splitlines()[n - 2].strip()
            if not m.group("codes") or not (rest.startswith("#") or above.startswith("#")):
                bare.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bare, "say which error and why (# type: ignore[code]  # reason):\n" + "\n".join(bare)
