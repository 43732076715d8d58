"""The first-run guard: before Qt loads, say why the window cannot open (no core dump)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fvdesk.core import display_check as dc

ROOT = Path(__file__).resolve().parents[2]
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


class FakeX:
    """A listener answering the X11 connection setup like a server would (or not at all)."""

    def __init__(self, sock: socket.socket, answer: bytes) -> None:
        self.sock, self.answer, self.requests = sock, answer, []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    head = conn.recv(12)
                    n, d = struct.unpack_from("<HH", head, 6) if len(head) == 12 else (0, 0)
                    rest = b""
                    while len(rest) < -(-n // 4) * 4 + -(-d // 4) * 4:
                        rest += conn.recv(64)
                    self.requests.append(head + rest)
                    conn.sendall(self.answer)
                except OSError:
                    pass

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the blocked accept()
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(5)


# A minimal "Failed" reply (the server is there; it refuses us): 8 bytes and the reason.
FAILED = struct.pack("<BBHHH", 0, 20, 11, 0, 5) + b"No protocol specified"[:20].ljust(20, b"\0")


@pytest.fixture
def x_socket() -> Iterator[tuple[str, FakeX]]:
    """A fake X server on a unix socket: DISPLAY may name the socket's path (libxcb's form)."""
    folder = tempfile.mkdtemp(prefix="fvx", dir="/tmp")  # short: unix socket paths are limited
    path = os.path.join(folder, "X0")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(4)
    server = FakeX(sock, FAILED)
    yield path, server
    server.close()
    shutil.rmtree(folder, ignore_errors=True)


def _free_display_number() -> int:
    """A display number with neither a local socket nor a TCP listener here."""
    for n in range(4711, 4800):
        if os.path.exists(f"/tmp/.X11-unix/X{n}"):
            continue
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", 6000 + n)) == 0:
                continue
        return n
    pytest.skip("no free X display number")


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


def test_missing_xcb_libraries_are_named_with_install_commands(plugins: Path, x_socket) -> None:
    env = {"DISPLAY": x_socket[0]}
    msg = dc.check_display(
        env, platform="linux", plugins=plugins, ldd=_ldd({"libqxcb.so": LDD_MISSING})
    )
    assert msg is not None and "\n" not in msg and msg.endswith(".")
    assert "libxcb-cursor.so.0, libxkbcommon-x11.so.0 and libfoo-bar.so.3" in msg
    assert "`sudo apt install libxcb-cursor0 libxkbcommon-x11-0 libfoo-bar3`" in msg
    assert "`sudo dnf install xcb-util-cursor libxkbcommon-x11 '*/libfoo-bar.so.3'`" in msg
    assert "Debian/Ubuntu" in msg and "Fedora" in msg
    assert dc.check_display(env, platform="linux", plugins=plugins, ldd=_ldd({})) is None


def test_wayland_session_falls_back_to_xcb(plugins: Path, x_socket, tmp_path: Path) -> None:
    wayland = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    wayland.bind(os.path.join(os.path.dirname(x_socket[0]), "wayland-0"))
    wayland.listen(4)
    env = {"WAYLAND_DISPLAY": "wayland-0", "DISPLAY": x_socket[0]}
    env["XDG_RUNTIME_DIR"] = os.path.dirname(x_socket[0])
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


def _one_sentence(msg: str | None, display: str) -> str:
    assert msg is not None and "\n" not in msg and msg.endswith("."), msg
    assert f"{display!r} named by DISPLAY cannot be reached" in msg, msg
    assert "ssh -X" in msg and "QT_QPA_PLATFORM=offscreen" in msg and "fvdesk --help" in msg
    return msg


def test_a_display_nobody_answers_on_is_named(plugins: Path) -> None:
    n = _free_display_number()
    for display in (f":{n}", f":{n}.0", f"unix:{n}", f"127.0.0.1:{n}"):
        env = {"DISPLAY": display}
        _one_sentence(
            dc.check_display(env, platform="linux", plugins=plugins, ldd=_ldd({})), display
        )


def test_a_fake_x_server_on_a_unix_socket_is_reachable(plugins: Path, x_socket, tmp_path) -> None:
    path, server = x_socket
    cookie = bytes(range(16))
    entry = b"".join(
        struct.pack(">H", len(f)) + f
        for f in (socket.gethostname().encode(), b"0", b"MIT-MAGIC-COOKIE-1", cookie)
    )
    (tmp_path / "xauth").write_bytes(struct.pack(">H", 256) + entry)
    for display in (path, path + ".0"):
        env = {"DISPLAY": display, "XAUTHORITY": str(tmp_path / "xauth")}
        assert dc.check_display(env, platform="linux", plugins=plugins, ldd=_ldd({})) is None
    request = server.requests[0]  # the setup request: little-endian, protocol 11.0, the cookie
    assert request[:1] == b"l" and struct.unpack_from("<HHHH", request, 2) == (11, 0, 18, 16)
    assert request[12:30] == b"MIT-MAGIC-COOKIE-1" and request[32:48] == cookie
    assert server.requests[1][6:8] == b"\x12\x00"


def test_a_tcp_listener_that_answers_is_reachable_and_one_that_hangs_up_is_not(
    plugins: Path,
) -> None:
    for answer, reachable in (
        (FAILED, True),
        (struct.pack("<BxHHH", 1, 11, 0, 0), True),
        (b"", False),
    ):
        sock = socket.socket()
        for n in range(100, 300):
            try:
                sock.bind(("127.0.0.1", 6000 + n))
                break
            except OSError:
                continue
        sock.listen(4)
        server = FakeX(sock, answer)
        try:
            env = {"DISPLAY": f"127.0.0.1:{n}.0"}
            msg = dc.check_display(env, platform="linux", plugins=plugins, ldd=_ldd({}))
            if reachable:
                assert msg is None, msg
            else:  # ssh -X with no X server on the client: the tunnel accepts, then hangs up
                _one_sentence(msg, f"127.0.0.1:{n}.0")
        finally:
            server.close()


def test_wayland_socket_is_tried(plugins: Path, tmp_path: Path) -> None:
    env = {"WAYLAND_DISPLAY": "wayland-7", "XDG_RUNTIME_DIR": str(tmp_path)}
    msg = dc.check_display(env, platform="linux", plugins=plugins, ldd=_ldd({}))
    assert msg is not None and "'wayland-7' named by WAYLAND_DISPLAY cannot be reached" in msg
    short = tempfile.mkdtemp(prefix="fvw", dir="/tmp")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.bind(os.path.join(short, "wayland-7"))
            s.listen(1)
            env = {"WAYLAND_DISPLAY": "wayland-7", "XDG_RUNTIME_DIR": short}
            assert dc.check_display(env, platform="linux", plugins=plugins, ldd=_ldd({})) is None
            env = {"WAYLAND_DISPLAY": os.path.join(short, "wayland-7")}  # an absolute name
            assert dc.check_display(env, platform="linux", plugins=plugins, ldd=_ldd({})) is None
    finally:
        shutil.rmtree(short, ignore_errors=True)
    env = {"DISPLAY": ":1", "QT_QPA_PLATFORM": "offscreen"}  # headless: nothing is tried
    assert dc.check_display(env, platform="linux", plugins=plugins) is None


def test_display_names_are_parsed_as_xlib_does() -> None:
    assert dc.x11_addresses(":3.1", "linux") == (
        [
            ("unix", "\0/tmp/.X11-unix/X3"),
            ("unix", "/tmp/.X11-unix/X3"),
            ("tcp", ("localhost", 6003)),
        ],
        3,
    )
    assert dc.x11_addresses("unix:2", "linux") == (
        [("unix", "\0/tmp/.X11-unix/X2"), ("unix", "/tmp/.X11-unix/X2")],
        2,
    )
    assert dc.x11_addresses("localhost:10.0", "linux") == ([("tcp", ("localhost", 6010))], 10)
    assert dc.x11_addresses("[::1]:1", "linux") == ([("tcp", ("::1", 6001))], 1)
    assert dc.x11_addresses("tcp/box:0", "linux") == ([("tcp", ("box", 6000))], 0)
    mac = "/private/tmp/com.apple.launchd.AbC/org.xquartz:0"
    assert dc.x11_addresses(mac, "darwin") == (
        [("unix", mac), ("unix", "/private/tmp/com.apple.launchd.AbC/org.xquartz")],
        0,
    )
    assert dc.x11_addresses("decnet::0", "linux") is None


def test_app_on_an_unreachable_display_exits_1_with_one_line_before_qt() -> None:
    display = f":{_free_display_number()}"
    out = subprocess.run(
        [sys.executable, "-c", "import sys; from fvdesk.cli import main; code = main([]);"
         "print(sorted(m for m in sys.modules if m.startswith('PySide6'))); sys.exit(code)"],
        capture_output=True, text=True, cwd=ROOT, env={**_env_without_display(), "DISPLAY": display},
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 1, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fvdesk: error: "), out.stderr
    _one_sentence(lines[0], display)
    assert out.stdout.strip() == "[]"  # Qt was never loaded
