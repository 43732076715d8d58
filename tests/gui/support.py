"""Helpers of the app's tests (the fixtures ``isolated``, ``demo_model``, ``window`` and
``demo_window`` are in conftest.py)."""

from __future__ import annotations

LOAD_TIMEOUT = 180_000
RENDER_TIMEOUT = 120_000
CONV1 = "/features/block1/conv/Conv"
LOGITS = "/classifier/Gemm"


def fast_settings(window, **extra) -> None:
    """A few steps on a small canvas, on the CPU: renders take a fraction of a second."""
    values = {"steps": 6, "size": 32, "batch": 8, "preview_every": 2, "device": "cpu"}
    values.update(extra)
    window.settings_panel.set_values(values)


def wait_idle(qtbot, w, timeout=RENDER_TIMEOUT) -> None:
    qtbot.waitUntil(lambda: not w.queue.busy(), timeout=timeout)


def when_modal(fn) -> None:
    """Call ``fn(dialog)`` once a modal dialog is up (schedule it before what opens one)."""
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    def attempt() -> None:
        d = QApplication.activeModalWidget()
        if d is None:
            QTimer.singleShot(20, attempt)
            return
        fn(d)

    QTimer.singleShot(0, attempt)
