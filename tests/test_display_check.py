"""The first-run guard: before Qt loads, say why the window cannot open (no core dump)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fvdesk.core import display_check as dc

ROOT = Path(__file__).resolve().parents[1]
LDD_MISSING = (
    "\tlinux-vdso.so.1 (0x00007ffd)\n"
    "\tlibQt6XcbQpa.so.6 => /x/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f)\n"
    "\tlibxcb-cursor.so.0 => not found\n"
    "\tlibxkbcommon-x11.so.0 => not found\n"
    "\tlibxcb-cursor.so.0 => not found\n"
    "\tlibfoo-bar.so.3 => not found\n"
)


@pytest.fixture
def plugins(tmp_path: Path) -> Path:
    folder = tmp_path / "platforms"
    folder.mkdir()
    for name in ("libqxcb.so", "libqwayland.so", "libqoffscreen.so"):
        (folder / name).write_bytes(b"\x7fELF")
    return folder


def _ldd(reports: dict[str, str]):
    return lambda path: reports.get(path.name, "\tlibc.so.6 => /lib/libc.so.6\n")


def test_no_display_at_all(plugins: Path) -> None:
    msg = dc.check_display({}, platform="linux", plugins=plugins, ldd=_ldd({}))
    assert msg is not None and "no display was found" in msg and "fvdesk --help" in msg
    assert msg.count(".") == 1 and msg.endswith(".") and "\n" not in msg
    assert dc.check_display({"QT_QPA_PLATFORM": "xcb"}, platform="linux", plugins=plugins)


def test_headless_platform_or_another_os_is_left_alone(plugins: Path) -> None:
    for env in ({"QT_QPA_PLATFORM": "offscreen"}, {"QT_QPA_PLATFORM": "minimal:x=1"}):
        assert dc.check_display(env, platform="linux", plugins=plugins) is None
    assert dc.check_display({}, platform="darwin") is None
    assert dc.check_display({}, platform="win32") is None


def test_missing_xcb_libraries_are_named_with_install_commands(plugins: Path) -> None:
    env = {"DISPLAY": ":0"}
    msg = dc.check_display(
        env, platform="linux", plugins=plugins, ldd=_ldd({"libqxcb.so": LDD_MISSING})
    )
    assert msg is not None and "\n" not in msg and msg.endswith(".")
    assert "libxcb-cursor.so.0, libxkbcommon-x11.so.0 and libfoo-bar.so.3" in msg
    assert "`sudo apt install libxcb-cursor0 libxkbcommon-x11-0 libfoo-bar3`" in msg
    assert "`sudo dnf install xcb-util-cursor libxkbcommon-x11 '*/libfoo-bar.so.3'`" in msg
    assert "Debian/Ubuntu" in msg and "Fedora" in msg
    assert dc.check_display(env, platform="linux", plugins=plugins, ldd=_ldd({})) is None


def test_wayland_session_falls_back_to_xcb(plugins: Path) -> None:
    env = {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": ":0"}
    broken_wayland = _ldd({"libqwayland.so": "\tlibwayland-cursor.so.0 => not found\n"})
    assert dc.check_display(env, platform="linux", plugins=plugins, ldd=broken_wayland) is None
    both = _ldd(
        {"libqwayland.so": "\tlibwayland-cursor.so.0 => not found\n", "libqxcb.so": LDD_MISSING}
    )
    msg = dc.check_display(env, platform="linux", plugins=plugins, ldd=both)
    assert (
        msg is not None
        and "wayland and xcb platform plugins" in msg
        and "libwayland-cursor0" in msg
    )


def test_the_real_plugin_is_found_and_checked_with_ldd() -> None:
    folder = dc.qt_platforms_dir()
    assert folder is not None and (folder / "libqxcb.so").is_file()
    assert isinstance(dc.missing_libraries(folder / "libqxcb.so"), list)


def _env_without_display() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.pop("QT_QPA_PLATFORM", None)
    return env


def test_app_without_a_display_exits_1_with_one_line() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from fvdesk.cli import main; code = main([]);"
         "print(sorted(m for m in sys.modules if m.startswith('PySide6'))); sys.exit(code)"],
        capture_output=True, text=True, cwd=ROOT, env=_env_without_display(), timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "no display was found" in lines[0], out.stderr
    assert out.stdout.strip() == "[]"  # Qt was never loaded


def test_missing_libraries_stop_the_app_before_qt(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from fvdesk import cli

    monkeypatch.setattr(dc, "check_display", lambda: "fvdesk cannot open its window because X.")
    monkeypatch.setattr("fvdesk.gui.app.run_app", lambda *_a: pytest.fail("Qt was started"))
    assert cli.main([]) == 1
    assert capsys.readouterr().err == "fvdesk: error: fvdesk cannot open its window because X.\n"
