"""``fvdesk --self-test``: one line per check, exit 0 only when every check passes."""

from __future__ import annotations

import pytest

from fvdesk import selftest
from fvdesk.cli import main


def _devices_here() -> list[str]:
    """The render checks this machine should get, read from torch, not from the self-test."""
    import torch

    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    return found + (["mps"] if mps is not None and mps.is_available() else [])


def test_self_test_passes_here(capsys) -> None:
    assert main(["--self-test"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [line[6:24].strip() for line in lines[:-1]]
    renders = [f"render {d}" for d in _devices_here()]
    assert names == ["imports", "load demo model", "parity", *renders, "gallery", "app window"]
    assert all(line.startswith("ok ") for line in lines[:-1]), lines
    assert all("objective" in lines[3 + i] for i in range(len(renders)))
    assert "read back identical" in lines[3 + len(renders)]
    assert lines[-1] == f"self-test passed: {len(names)} checks."


def test_a_failing_check_fails_the_command(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def broken_gallery(self: selftest.SelfTest) -> str:
        raise RuntimeError("the image of unit 0 changed on the way")

    monkeypatch.setattr(selftest.SelfTest, "gallery", broken_gallery)
    monkeypatch.setattr(selftest.SelfTest, "app", lambda self: None)  # a skip is not a failure
    assert main(["--self-test"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  gallery            the image of unit 0 changed on the way" in out
    assert "skip  app window" in out
    total = 5 + len(_devices_here())
    assert out.strip().endswith(f"self-test FAILED: 1 of {total} checks failed.")


def test_a_render_that_does_not_optimize_fails(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The render check measures that the objective rises, not just that steps ran."""
    monkeypatch.setattr(selftest, "RENDER_STEPS", 1)
    assert main(["--self-test"]) == 1
    assert "FAIL  render cpu         the objective did not rise" in capsys.readouterr().out
