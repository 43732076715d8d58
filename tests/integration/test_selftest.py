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
    assert names == selftest.expected_checks(_devices_here())
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


def _fake_torch_devices(monkeypatch: pytest.MonkeyPatch, *, cuda: int, mps: bool) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    if getattr(torch.backends, "mps", None) is not None:
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)


@pytest.mark.parametrize(
    "cuda,mps,want",
    [
        (0, False, ["cpu"]),
        (2, False, ["cpu", "cuda:0", "cuda:1"]),
        (1, True, ["cpu", "cuda:0", "mps"]),
    ],
)
def test_the_expected_checks_follow_the_devices_present(
    monkeypatch: pytest.MonkeyPatch, cuda: int, mps: bool, want: list[str]
) -> None:
    """The device list comes from torch (faked here), and the expected checks from it."""
    _fake_torch_devices(monkeypatch, cuda=cuda, mps=mps)
    assert selftest.devices() == want
    checks = selftest.expected_checks(selftest.devices())
    assert checks[:3] == ["imports", "load demo model", "parity"]
    assert checks[3:-2] == [f"render {d}" for d in want]
    assert checks[-2:] == ["gallery", "app window"]


def test_every_device_present_gets_its_render_check(
    monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """With two (faked) GPUs the command runs, and prints, one render check for each."""
    rendered: list[str] = []
    real_render = selftest.SelfTest.render

    def render(self: selftest.SelfTest, device: str) -> str:
        rendered.append(device)
        return real_render(self, "cpu")  # the work itself runs on the CPU this machine has

    monkeypatch.setattr(selftest, "devices", lambda: ["cpu", "cuda:0", "cuda:1"])
    monkeypatch.setattr(selftest.SelfTest, "render", render)
    monkeypatch.setattr(selftest.SelfTest, "app", lambda self: None)
    assert main(["--self-test"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line[6:24].strip() for line in lines[:-1]] == selftest.expected_checks(
        ["cpu", "cuda:0", "cuda:1"]
    )
    assert rendered == ["cpu", "cuda:0", "cuda:1"]
