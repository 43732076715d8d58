"""Regenerate ``docs/screenshot.png``: the real window, driven as a user would, grabbed from the
display server (not a widget paint), so the picture is what a user sees.

Run under a display, e.g. headless with Xvfb::

    xvfb-run -a -s "-screen 0 1600x1000x24" python -m fvdesk.gui.qt_screenshot docs/screenshot.png

It opens the embedded demo model, renders its classes and the first units of a layer, starts one
more layer so a render is caught in progress, and saves the screen area of the window.  Settings
go to a temporary file, never the user's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from PySide6.QtCore import QEventLoop
from PySide6.QtGui import QGuiApplication


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, nargs="?", default=Path("docs/screenshot.png"))
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--units", type=int, default=11)
    ap.add_argument("--width", type=int, default=1560)
    ap.add_argument("--height", type=int, default=960)
    args = ap.parse_args(argv)

    os.environ.setdefault("FVDESK_SETTINGS", str(Path(tempfile.mkdtemp()) / "screenshot.ini"))
    from fvdesk.gui.app import make_app
    from fvdesk.gui.qt_main_window import MainWindow

    app = make_app([sys.argv[0]])
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
    _wait(lambda: False, 0.5)
    screen = w.screen() or QGuiApplication.primaryScreen()
    geo = w.frameGeometry()
    shot = screen.grabWindow(0, geo.x(), geo.y(), geo.width(), geo.height())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not shot.save(str(args.out), "PNG"):
        print(f"cannot write {args.out}", file=sys.stderr)
        return 1
    print(f"saved {args.out} ({shot.width()}×{shot.height()})")
    w.close()
    app.processEvents()
    return 0


if __name__ == "__main__":
    sys.exit(main())
