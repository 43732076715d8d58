"""``run_app``: the GUI entry point the CLI calls when no subcommand is given.

Only Qt is imported at start; torch and onnx load on the loader thread while the window is
already on screen.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import QCoreApplication, QTimer
from PySide6.QtWidgets import QApplication

import fvdesk
from fvdesk.gui.shell import prefs as qt_prefs


def make_app(argv: list[str] | None = None) -> QApplication:
    """The ``QApplication`` (reused when one exists, e.g. under pytest-qt)."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(argv if argv is not None else [sys.argv[0]])
    QCoreApplication.setOrganizationName(qt_prefs.ORGANIZATION)
    QCoreApplication.setApplicationName(qt_prefs.APPLICATION)
    QCoreApplication.setApplicationVersion(fvdesk.__version__)
    QApplication.setDesktopFileName("fvdesk")
    from fvdesk.gui.shell.about import app_icon

    app.setWindowIcon(app_icon())  # type: ignore[attr-defined]  # instance() is typed QCoreApplication
    return app  # type: ignore[return-value]  # instance() is typed QCoreApplication


def run_app(path: str | None = None, *, device: str | None = None) -> int:
    """Show the main window with ``path`` (or the embedded demo model) and run the event loop;
    ``device`` (from ``fvdesk MODEL --device D``) replaces the device setting for this session."""
    logging.basicConfig(
        level=os.environ.get("FVDESK_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s"
    )
    app = make_app()
    from fvdesk.gui.shell.main_window import MainWindow

    window = MainWindow()
    if device:
        window.settings_panel.set_value("device", device)
    window.show()

    def first_model() -> None:
        if path:
            window.open_model(Path(path))
        else:
            window.open_demo()

    QTimer.singleShot(0, first_model)

    # Ctrl+C in the terminal closes the window cleanly (Python only sees signals between Qt events).
    signal.signal(signal.SIGINT, lambda *_: window.close())
    tick = QTimer()
    tick.timeout.connect(lambda: None)
    tick.start(250)

    rc = app.exec()
    window.shutdown()
    return finish(rc)


def finish(rc: int, *, leave: Callable[[int], object] = os._exit) -> int:
    """After the event loop: wait for gallery writes (a gallery is never left half-written),
    then ``leave`` at once if work that cannot be interrupted is still running (a model still
    converting, a render step that did not return in time); settings are already written."""
    from fvdesk.gui.runtime.worker import BackgroundCall
    from fvdesk.gui.shell.main_window import _orphans

    BackgroundCall.wait_for_writes()
    if _orphans or BackgroundCall.any_alive(abandonable=True):
        sys.stdout.flush()
        sys.stderr.flush()
        leave(rc)
    return rc
