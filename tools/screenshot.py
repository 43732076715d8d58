"""Regenerate ``docs/screenshot.png``: the real window, driven as a user would, grabbed from the
display server (not a widget paint), so the picture is what a user sees.

Run under a display, e.g. headless with Xvfb::

    xvfb-run -a -s "-screen 0 1600x1000x24" python tools/screenshot.py docs/screenshot.png

It opens the embedded demo model, renders its classes and the first units of a layer, starts one
more layer so a render is caught in progress, and saves the screen area of the window.  Settings
go to a temporary file, never the user's.

``--scene examples [--images DIR]`` shows the dataset examples beside a render instead
(``docs/examples.png``): it chooses DIR as the model's dataset (without it, a folder of generated
pattern images of the demo's classes), renders the classes, selects one so the examples dock
shows its top and bottom images, and grabs (``docs/examples.png`` is made with ``--scene
examples --steps 64 --colors 256``).  The examples cache goes to a temporary folder too.

``--scene spectrum`` (``docs/spectrum.png``) and ``--scene interpolation``
(``docs/interpolation.png``) show the article's figures instead, started as a user would: the
unit(s) selected in the layer tree and the Figures menu's action triggered (the interpolation
dialog filled in and accepted).

``--scene inspect`` (``docs/inspect.png``) opens a grey image holding two generated patterns in
the Inspect Image dock (File > Open Image… without the dialog): the prediction, the last conv layer's top units
with their heat maps and renders, and the attribution of the predicted class, the canvas holding
the views' tiles.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QEventLoop, Qt, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

SPECTRUM_UNIT = ("/classifier/Gemm", 4)
INTERPOLATION = ("/features/block4/relu/Relu", 3, 11)


def _wait(condition, timeout: float) -> bool:
    """Run the event loop until ``condition()`` holds (or ``timeout`` seconds pass)."""
    app = QGuiApplication.instance()
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            return False
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        time.sleep(0.01)
    return True


def _pattern_folder(root: Path, per_class: int = 24, size: int = 96) -> Path:
    """Generated images of the demo model's classes (what it was trained on), as PNGs."""
    import numpy as np
    from PIL import Image

    from fvdesk.core.patterns import CLASSES, generate

    x, y = generate(per_class * len(CLASSES), size, seed=7)
    for i in range(len(x)):
        path = root / CLASSES[int(y[i])] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((x[i].transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(path)
    return root


def examples_scene(w: Any, args: argparse.Namespace) -> int:
    """A render of a class with its dataset examples beside it (``--scene examples``)."""
    from fvdesk.core.dataset.choice import DatasetChoice

    folder = args.images or _pattern_folder(Path(tempfile.mkdtemp()) / "patterns")
    choice = DatasetChoice(str(folder), top=6, bottom=3)
    w.datasets.apply_choice(choice)
    if not _wait(lambda: w.datasets.choice == choice, 120):
        print(f"cannot use {folder} as the dataset: {w.errors[-1:]}", file=sys.stderr)
        return 1
    w.jobs.render_layer(w.model.graph.logits_name, 8)
    w.jobs.render_units("/features/block3/relu/Relu", list(range(4)))
    t0 = time.monotonic()
    if not _wait(lambda: not w.queue.busy(), 3600):
        print("rendering took too long", file=sys.stderr)
        return 1
    print(f"rendered in {time.monotonic() - t0:.0f} s")
    w.resizeDocks([w.tree_dock, w.examples_dock], [300, 640], Qt.Orientation.Horizontal)
    w.resizeDocks([w.log_dock], [90], Qt.Orientation.Vertical)
    w.examples_dock.raise_()
    view = w.tile_view
    w.canvas.size_slider.setValue(view.viewport().width() // 4 - 24)
    view.setCurrentIndex(w.tiles.index(args.tile, 0))
    panel = w.datasets.panel
    if not _wait(lambda: panel.examples is not None and all(t.loaded for t in panel.tiles), 600):
        print("the dataset examples did not load", file=sys.stderr)
        return 1
    return grab(w, args.out, args.colors)


def _two_patterns(path: Path, cls: int) -> Path:
    """A grey 128 px image with class ``cls``'s pattern top left and the next class's bottom
    right: the heat maps and the attribution then point somewhere."""
    import numpy as np
    from PIL import Image

    from fvdesk.core.patterns import CLASSES, generate

    x, y = generate(4 * len(CLASSES), 64, seed=7)
    a = x[int(np.flatnonzero(y == cls)[0])]
    b = x[int(np.flatnonzero(y == (cls + 1) % len(CLASSES))[0])]
    img = np.full((3, 128, 128), 0.5, dtype=np.float32)
    img[:, :64, :64], img[:, 64:, 64:] = a, b
    Image.fromarray((img.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8)).save(path)
    return path


def inspect_scene(w: Any, args: argparse.Namespace) -> int:
    """A pattern image in the inspector: prediction, top units, attribution (``--scene inspect``)."""
    image = _two_patterns(Path(tempfile.mkdtemp()) / "two_patterns.png", args.tile % 8)
    w.inspect_image(image)
    panel = w.inspect.panel
    if not _wait(lambda: panel.activations is not None, 300):
        print(f"cannot inspect {image}: {w.errors[-1:]}", file=sys.stderr)
        return 1
    panel.top_spin.setValue(6)
    if not _wait(lambda: not w.queue.busy(), 3600):
        print("rendering took too long", file=sys.stderr)
        return 1
    panel.tabs.setCurrentIndex(1)  # Top Units
    panel.attribute_current()
    _wait(lambda: panel.attribution is not None and not w.queue.busy(), 3600)
    w.settings_dock.hide()
    w.resizeDocks([w.inspect_dock], [560], Qt.Orientation.Horizontal)
    w.resizeDocks([w.log_dock], [80], Qt.Orientation.Vertical)
    w.inspect_dock.raise_()
    view = w.tile_view
    w.canvas.size_slider.setValue(view.viewport().width() // 5 - 24)
    view.scrollToTop()
    return grab(w, args.out, args.colors)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("docs/screenshot.png"))
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--units", type=int, default=11)
    ap.add_argument("--width", type=int, default=1560)
    ap.add_argument("--height", type=int, default=960)
    ap.add_argument("--scene", choices=("window", "examples", "spectrum", "interpolation", "inspect"),
                    default="window")  # fmt: skip
    ap.add_argument("--images", type=Path, help="the dataset folder of --scene examples")
    ap.add_argument("--tile", type=int, default=3, help="the tile --scene examples selects")
    ap.add_argument("--frames", type=int, default=6, help="interpolation frames")
    ap.add_argument("--colors", type=int, default=0,
                    help="save a palette PNG of this many colours (0: full colour); "
                         "noisy renders compress badly otherwise")  # fmt: skip
    args = ap.parse_args(argv)

    os.environ.setdefault("FVDESK_SETTINGS", str(Path(tempfile.mkdtemp()) / "screenshot.ini"))
    os.environ.setdefault("FVDESK_CACHE_DIR", tempfile.mkdtemp(prefix="fvdesk-cache-"))
    from fvdesk.gui.app import make_app
    from fvdesk.gui.shell.main_window import MainWindow

    app = make_app([sys.argv[0]])  # noqa: F841 - the application lives as long as main()
    w = MainWindow()
    w.setGeometry(20, 20, args.width, args.height)
    w.show()
    w.open_demo()
    if not _wait(lambda: w.model is not None, 300):
        print("the demo model did not load", file=sys.stderr)
        return 1
    w.settings_panel.set_values(
        {"steps": args.steps, "size": args.size, "preview_every": 8, "device": "auto"}
    )
    if args.scene == "examples":
        return examples_scene(w, args)
    if args.scene == "inspect":
        return inspect_scene(w, args)
    if args.scene != "window":
        if not figure_scene(w, args):
            return 1
        return grab(w, args.out, args.colors)
    layer = "/features/block3/relu/Relu"
    w.jobs.render_layer(w.model.graph.logits_name, 8)
    w.jobs.render_layer(layer, args.units)
    w.layers.select(layer, 5)
    t0 = time.monotonic()
    if not _wait(lambda: not w.queue.busy(), 3600):
        print("rendering took too long", file=sys.stderr)
        return 1
    print(f"rendered in {time.monotonic() - t0:.0f} s")
    # one more layer, caught while optimizing: live previews, progress, the queue in the status bar
    w.jobs.render_units("/features/block4/relu/Relu", [0, 1, 2, 3])
    w.jobs.render_deepdream("/features/block2/relu/Relu")
    running = w.tiles.tiles()[-2]
    _wait(lambda: running.step >= args.steps * 0.45, 3600)
    columns = 6
    view = w.tile_view
    w.canvas.size_slider.setValue(view.viewport().width() // columns - 24)
    view.scrollToTop()
    view.setCurrentIndex(w.tiles.index(5, 0))
    return grab(w, args.out, args.colors)


def grab(w, out: Path, colors: int = 0) -> int:  # noqa: ANN001 - the MainWindow
    """Save the screen area of the window, then close it."""
    _wait(lambda: False, 0.5)
    screen = w.screen() or QGuiApplication.primaryScreen()
    geo = w.frameGeometry()
    shot = screen.grabWindow(0, geo.x(), geo.y(), geo.width(), geo.height())
    out.parent.mkdir(parents=True, exist_ok=True)
    if not shot.save(str(out), "PNG"):
        print(f"cannot write {out}", file=sys.stderr)
        return 1
    if colors:
        to_palette(out, colors)
    print(f"saved {out} ({shot.width()}×{shot.height()}, {out.stat().st_size // 1024} KB)")
    w.close()
    QGuiApplication.instance().processEvents()
    return 0


def to_palette(path: Path, colors: int) -> None:
    """Rewrite the PNG at ``path`` with a palette of ``colors`` colours (median cut, no dither)."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    flat = rgb.quantize(colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    flat.save(path, optimize=True)


def _accept_dialog(frames: int) -> None:
    """Fill in and accept the interpolation dialog the action opened (it is modal)."""
    d = QApplication.activeModalWidget()
    if d is None:
        QTimer.singleShot(50, lambda: _accept_dialog(frames))
        return
    d.frames.setValue(frames)
    d.accept()
    if d.isVisible():  # refused: say why rather than wait for ever
        print(f"the interpolation dialog refused: {d.error.text()}", file=sys.stderr)
        d.reject()


def figure_scene(w, args: argparse.Namespace) -> bool:  # noqa: ANN001
    """One of the article's figures through the window's actions, rendered to the end."""
    for dock in (w.settings_dock, w.log_dock):  # the canvas gets the room for the figure
        dock.hide()
    if args.scene == "spectrum":
        w.layers.select_units(SPECTRUM_UNIT[0], SPECTRUM_UNIT[1:])
        w.actions_by_key["spectrum"].trigger()
    else:
        layer, a, b = INTERPOLATION
        w.layers.select_units(layer, (a, b))
        QTimer.singleShot(0, lambda: _accept_dialog(args.frames))
        w.actions_by_key["interpolate"].trigger()
    n = len(w.tiles.tiles())
    if not n:
        print("the action queued nothing", file=sys.stderr)
        return False
    t0 = time.monotonic()
    if not _wait(lambda: not w.queue.busy(), 3 * 3600):
        print("rendering took too long", file=sys.stderr)
        return False
    print(f"rendered {n} tiles in {time.monotonic() - t0:.0f} s")
    view = w.tile_view
    vw, vh = view.viewport().width(), view.viewport().height()
    # the largest tiles that show the whole figure (a long row wraps): room for the captions;
    # an interpolation reads left to right, so its frames stay on one line
    per_line = [n] if args.scene == "interpolation" else range(1, n + 1)
    px = max(min(vw // k - 24, vh // -(-n // k) - 64) for k in per_line)
    w.canvas.size_slider.setValue(px)
    view.scrollToTop()
    view.setCurrentIndex(w.tiles.index(0, 0))
    return True


if __name__ == "__main__":
    sys.exit(main())
