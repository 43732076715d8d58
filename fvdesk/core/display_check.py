"""Can the desktop app open a window here?  Asked before anything creates a ``QApplication``.

When Qt cannot load its platform plugin it calls ``qFatal``: the process aborts with a core dump
and a message ("could not load the Qt platform plugin xcb ... Reinstalling the application may
fix this problem") that names neither the missing system libraries nor the fix.  This module finds
the two usual causes without importing Qt, so the command line can print one sentence and exit 1:

* no display at all (Linux: ``DISPLAY`` and ``WAYLAND_DISPLAY`` unset, no headless
  ``QT_QPA_PLATFORM`` chosen): point to the headless commands;
* a display that is named but not there (SSH without X forwarding, a stale ``DISPLAY`` in tmux):
  the X connection setup is tried as ``xdpyinfo`` would, so a server that does not answer is
  named before Qt aborts on it with a hint about ``xcb-cursor0``;
* the xcb plugin's shared libraries missing (``libxcb-cursor0`` and friends are absent on many
  fresh desktop and WSL installs): ``ldd`` on PySide6's ``libqxcb.so`` lists what the dynamic
  loader cannot find, transitively, which is exactly what Qt's ``dlopen`` would trip over.

Only Linux is checked; macOS and Windows ship their platform plugins' dependencies.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

HEADLESS_PLATFORMS = {
    "offscreen",
    "minimal",
    "minimalegl",
    "vnc",
    "linuxfb",
    "eglfs",
    "vkkhrdisplay",
}
HEADLESS_HINT = (
    "use the headless commands instead (fvdesk layers|info|render|atlas; see fvdesk --help)"
)

# Library -> (Debian/Ubuntu package, Fedora package).
PACKAGES: dict[str, tuple[str, str]] = {
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xinerama.so.0": ("libxcb-xinerama0", "libxcb"),
    "libxcb-xinput.so.0": ("libxcb-xinput0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libX11-xcb"),
    "libX11.so.6": ("libx11-6", "libX11"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libEGL.so.1": ("libegl1", "libglvnd-egl"),
    "libGL.so.1": ("libgl1", "libglvnd-glx"),
    "libOpenGL.so.0": ("libopengl0", "libglvnd-opengl"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus-libs"),
    "libglib-2.0.so.0": ("libglib2.0-0", "glib2"),
    "libICE.so.6": ("libice6", "libICE"),
    "libSM.so.6": ("libsm6", "libSM"),
    "libwayland-client.so.0": ("libwayland-client0", "libwayland-client"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "libwayland-cursor"),
    "libwayland-egl.so.1": ("libwayland-egl1", "libwayland-egl"),
}

_NOT_FOUND = re.compile(r"^\s*(\S+)\s+=>\s+not found", re.MULTILINE)

LddFn = Callable[[Path], str | None]


def qt_platforms_dir() -> Path | None:
    """PySide6's ``Qt/plugins/platforms`` folder, found without importing PySide6."""
    candidates: list[Path] = []
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:  # a PyInstaller build keeps PySide6 under the bundle folder
        candidates.append(Path(bundle) / "PySide6" / "Qt" / "plugins" / "platforms")
    try:
        spec = importlib.util.find_spec("PySide6")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec is not None else []:
        candidates.append(Path(loc) / "Qt" / "plugins" / "platforms")
    return next((c for c in candidates if c.is_dir()), None)


def run_ldd(path: Path) -> str | None:
    """``ldd``'s report on ``path``; None when ``ldd`` is not available or fails."""
    exe = shutil.which("ldd")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, str(path)],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def missing_libraries(plugin: Path, ldd: LddFn = run_ldd) -> list[str]:
    """Shared libraries ``plugin`` needs that the dynamic loader cannot find (in ldd's order)."""
    report = ldd(plugin)
    if not report:
        return []
    return list(dict.fromkeys(_NOT_FOUND.findall(report)))


def install_commands(libraries: Sequence[str]) -> tuple[str, str]:
    """(apt command, dnf command) installing the packages that provide ``libraries``."""
    deb = list(dict.fromkeys(PACKAGES[x][0] if x in PACKAGES else _guess_deb(x) for x in libraries))
    fed = list(dict.fromkeys(PACKAGES[x][1] if x in PACKAGES else _guess_rpm(x) for x in libraries))
    return f"sudo apt install {' '.join(deb)}", f"sudo dnf install {' '.join(fed)}"


def _guess_deb(lib: str) -> str:
    """Debian names most library packages ``<soname stem><version>`` in lower case."""
    m = re.match(r"^(lib[\w+.-]*?)\.so\.(\d+)", lib)
    if not m:
        return lib
    stem, ver = m.group(1).lower(), m.group(2)
    return f"{stem}-{ver}" if stem[-1].isdigit() else f"{stem}{ver}"


def _guess_rpm(lib: str) -> str:
    """Fedora lets dnf resolve a library by its file name."""
    return f"'*/{lib}'"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


X11_SOCKET_DIR = "/tmp/.X11-unix"
X11_TCP_BASE = 6000
CONNECT_TIMEOUT = 3.0  # seconds; a server that answers does so in milliseconds
UNREACHABLE_HINT = (
    "log in with `ssh -X` (X forwarding) or from the desktop session, or unset DISPLAY and "
    f"{HEADLESS_HINT}, or set QT_QPA_PLATFORM=offscreen"
)

# Where an X display can be reached: ("unix", path) or ("tcp", (host, port)); several are tried
# in order, as Xlib does for ``:N`` (the abstract socket first, then the file).
Address = tuple[str, object]


def x11_addresses(display: str, platform: str | None = None) -> tuple[list[Address], int] | None:
    """The sockets the X display ``display`` (``DISPLAY``'s syntax) lives on, and its number;
    None when the name cannot be parsed (or is DECnet): then nothing is tried."""
    platform = sys.platform if platform is None else platform
    name = display.strip()
    if name.startswith("/"):  # a socket path (XQuartz's launchd form, or libxcb's full path)
        paths = [name]
        m = re.match(r"^(.*)\.\d+$", name)
        if m:  # ``path.screen``
            paths.append(m.group(1))
        m = re.match(r"^(.*?):(\d+)(?:\.\d+)?$", name)
        number = int(m.group(2)) if m else 0
        if m:  # ``path:N`` where the socket is named ``path`` (older launchd form)
            paths += [f"{m.group(1)}:{m.group(2)}", m.group(1)]
        return [("unix", p) for p in dict.fromkeys(paths)], number
    protocol = ""
    m = re.match(r"^(tcp|inet6?|unix|local)/(.*)$", name)
    if m:
        protocol, name = m.group(1), m.group(2)
    m = re.match(r"^(\[[^\]]*\]|[^:]*):(\d+)(?:\.\d+)?$", name)
    if not m:  # ``host::N`` (DECnet) or garbage: Qt's own message is all there is
        return None
    host, number = m.group(1).strip("[]"), int(m.group(2))
    if protocol in ("unix", "local") or (not protocol and host in ("", "unix")):
        sock = f"{X11_SOCKET_DIR}/X{number}"
        local: list[Address] = [("unix", "\0" + sock)] if platform.startswith("linux") else []
        # libxcb falls back to TCP on this machine for a bare ``:N``
        tcp: list[Address] = (
            [] if protocol or host else [("tcp", ("localhost", X11_TCP_BASE + number))]
        )
        return [*local, ("unix", sock), *tcp], number
    return [("tcp", (host or "localhost", X11_TCP_BASE + number))], number


def _xauth_cookie(env: Mapping[str, str], number: int, host: str | None) -> bytes | None:
    """The MIT-MAGIC-COOKIE-1 for display ``number`` from XAUTHORITY (or ~/.Xauthority): local
    entries match this machine's name (``host`` None or a loopback name), TCP ones the host's
    address; wildcard entries match any."""
    path = env.get("XAUTHORITY") or (
        str(Path(env["HOME"]) / ".Xauthority") if env.get("HOME") else ""
    )
    try:
        data = Path(path).read_bytes() if path else b""
    except OSError:
        return None
    wanted: set[tuple[int, bytes]] = set()
    if host is None or host in ("localhost", "127.0.0.1", "::1"):
        wanted.add((256, socket.gethostname().encode()))
    else:
        with contextlib.suppress(OSError):
            wanted.add((0, socket.inet_aton(socket.gethostbyname(host))))
    pos = 0
    try:
        while pos + 2 <= len(data):
            (family,) = struct.unpack_from(">H", data, pos)
            pos += 2
            fields = []
            for _ in range(4):
                (n,) = struct.unpack_from(">H", data, pos)
                fields.append(data[pos + 2 : pos + 2 + n])
                pos += 2 + n
            address, num, auth_name, cookie = fields
            if auth_name != b"MIT-MAGIC-COOKIE-1" or num not in (b"", str(number).encode()):
                continue
            if family == 65535 or (family, address) in wanted:
                return cookie
    except struct.error:  # a truncated file: what was read so far is all there is
        return None
    return None


def _setup_request(cookie: bytes | None) -> bytes:
    """The X11 connection setup request (little-endian, protocol 11.0), with the cookie if any."""
    name = b"MIT-MAGIC-COOKIE-1" if cookie else b""
    data = cookie or b""

    def pad(b: bytes) -> bytes:
        return b + b"\0" * (-len(b) % 4)

    head = struct.pack("<BxHHHHxx", ord("l"), 11, 0, len(name), len(data))
    return head + pad(name) + pad(data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def x11_answers(
    display: str,
    env: Mapping[str, str] | None = None,
    *,
    timeout: float = CONNECT_TIMEOUT,
    platform: str | None = None,
) -> bool | None:
    """Whether an X server answers the connection setup on ``display``: True for any answer
    (success, failure such as a refused authorization, or a request to authenticate: the server is
    there and Qt's own message will be about that), False when nothing listens or the connection
    closes unanswered, None when the name cannot be parsed."""
    env = os.environ if env is None else env
    parsed = x11_addresses(display, platform)
    if parsed is None:
        return None
    addresses, number = parsed
    for kind, address in addresses:
        if kind == "unix" and not hasattr(socket, "AF_UNIX"):
            continue
        host = address[0] if kind == "tcp" else None  # type: ignore[index]  # a tcp address is (host, port)
        try:
            if kind == "unix":
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                conn = sock
                sock.connect(address)  # type: ignore[arg-type]  # a unix address is a path
            else:
                conn = socket.create_connection(address, timeout=timeout)  # type: ignore[arg-type]  # a tcp address is (host, port)
            with conn:
                conn.settimeout(timeout)
                conn.sendall(_setup_request(_xauth_cookie(env, number, host)))
                head = _recv_exact(conn, 8)
        except (OSError, ValueError):
            continue
        if len(head) == 8 and head[0] in (0, 1, 2):
            return True
    return False


def wayland_answers(env: Mapping[str, str]) -> bool | None:
    """Whether the Wayland compositor's socket named by WAYLAND_DISPLAY accepts a connection;
    None when that cannot be told (WAYLAND_SOCKET hands over a connected descriptor)."""
    if env.get("WAYLAND_SOCKET") or not hasattr(socket, "AF_UNIX"):
        return None
    name = env.get("WAYLAND_DISPLAY", "")
    if not name.startswith("/"):
        runtime = env.get("XDG_RUNTIME_DIR", "")
        if not runtime:
            return False
        name = str(Path(runtime) / name)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(name)
    except OSError:
        return False
    return True


def _unreachable(env: Mapping[str, str], chosen: str, platform: str) -> str | None:
    """The sentence for a named display nobody answers on, when no other one Qt would try works."""
    x_name, w_name = env.get("DISPLAY", ""), env.get("WAYLAND_DISPLAY", "")
    use_x = bool(x_name) and chosen in ("", "xcb")
    use_w = bool(w_name) and (chosen.startswith("wayland") or chosen == "")
    if use_w and wayland_answers(env) is not False:
        return None
    if use_x and x11_answers(x_name, env, platform=platform) is not False:
        return None
    named = []
    if use_x:
        named.append(f"the X display {x_name!r} named by DISPLAY")
    if use_w:
        named.append(f"the Wayland display {w_name!r} named by WAYLAND_DISPLAY")
    if not named:
        return None
    return (
        f"fvdesk cannot open its window because {' and '.join(named)} cannot be reached (no "
        f"server answers there); {UNREACHABLE_HINT}."
    )


def check_display(
    env: Mapping[str, str] | None = None,
    *,
    platform: str | None = None,
    plugins: Path | None = None,
    ldd: LddFn = run_ldd,
) -> str | None:
    """One sentence saying why the app's window cannot open here, or None when it can (or when
    nothing can be told: not Linux, PySide6 not found, no ``ldd``)."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if not platform.startswith("linux"):
        return None
    chosen = env.get("QT_QPA_PLATFORM", "").split(";")[0].split(":")[0].strip().lower()
    if chosen in HEADLESS_PLATFORMS:
        return None
    display, wayland = bool(env.get("DISPLAY")), bool(env.get("WAYLAND_DISPLAY"))
    if chosen in ("", "xcb", "wayland", "wayland-egl") and not display and not wayland:
        return (
            "fvdesk cannot open its window because no display was found (DISPLAY and "
            f"WAYLAND_DISPLAY are not set); start it from a desktop session, or {HEADLESS_HINT}."
        )
    if chosen == "xcb" and not display:
        return (
            "fvdesk cannot open its window because QT_QPA_PLATFORM asks for xcb but DISPLAY "
            f"is not set; start it from a desktop session, or {HEADLESS_HINT}."
        )
    unreachable = _unreachable(env, chosen, platform)
    if unreachable is not None:
        return unreachable
    folder = plugins if plugins is not None else qt_platforms_dir()
    if folder is None:
        return None
    # The plugins Qt will try, in order: a Wayland session falls back to xcb by itself.
    tries = []
    if chosen.startswith("wayland") or (chosen == "" and wayland):
        tries.append(("wayland", "libqwayland*.so"))
    if chosen == "xcb" or (chosen == "" and display):
        tries.append(("xcb", "libqxcb.so"))
    missing: list[str] = []
    for _name, pattern in tries:
        lacking = _missing(folder, pattern, ldd)
        if not lacking:
            return None
        missing += [x for x in lacking if x not in missing]
    if not missing:
        return None
    name = " and ".join(n for n, _ in tries)
    plural = "plugins need" if len(tries) > 1 else "plugin needs"
    apt, dnf = install_commands(missing)
    libs = _join(missing)
    verb = "is" if len(missing) == 1 else "are"
    return (
        f"fvdesk cannot open its window because Qt's {name} platform {plural} {libs}, which "
        f"{verb} not installed; install {'it' if len(missing) == 1 else 'them'} with `{apt}` "
        f"(Debian/Ubuntu) or `{dnf}` (Fedora), or {HEADLESS_HINT}."
    )


def _missing(folder: Path, pattern: str, ldd: LddFn) -> list[str]:
    """What the plugins matching ``pattern`` lack; empty when one of them is complete (or none
    is there to check: then Qt's own message is all there is)."""
    found: list[str] = []
    for plugin in sorted(folder.glob(pattern)):
        lacking = missing_libraries(plugin, ldd)
        if not lacking:
            return []
        found += [x for x in lacking if x not in found]
    return found
