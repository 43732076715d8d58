"""The status bar's permanent widgets: loading and render progress, cancel, and what the open
model runs with (device, where its preprocessing came from, conversion parity).

Display only: the window connects the controllers' signals to these methods.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QToolButton, QWidget


def _separator() -> QWidget:
    line = QLabel("|")
    line.setEnabled(False)
    return line


class StatusWidgets:
    """The permanent widgets of a ``QStatusBar`` (``showMessage`` hides only the normal ones)."""

    def __init__(self, bar: QStatusBar, cancel: QAction) -> None:
        self.bar = bar
        self.load_progress = QProgressBar()
        self.load_progress.setObjectName("loadProgress")
        self.load_progress.setRange(0, 1000)
        self.load_progress.setFixedWidth(160)
        self.load_progress.setVisible(False)
        self.job_label = QLabel("idle")
        self.job_label.setObjectName("jobLabel")
        self.job_progress = QProgressBar()
        self.job_progress.setObjectName("jobProgress")
        self.job_progress.setRange(0, 1000)
        self.job_progress.setFixedWidth(180)
        self.job_progress.setTextVisible(True)
        self.job_progress.setVisible(False)
        self.cancel_button = QToolButton()
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setDefaultAction(cancel)
        self.cancel_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        self.device_label = QLabel("no model")
        self.device_label.setObjectName("deviceLabel")
        self.preprocessing_label = QLabel("")
        self.preprocessing_label.setObjectName("preprocessingLabel")
        self.parity_label = QLabel("")
        self.parity_label.setObjectName("parityLabel")
        for w in (self.load_progress, self.job_label, self.job_progress, self.cancel_button,
                  _separator(), self.device_label, _separator(), self.preprocessing_label,
                  _separator(), self.parity_label):  # fmt: skip
            bar.addPermanentWidget(w)

    # -- loading ------------------------------------------------------------------------------
    def show_loading(self, name: str) -> None:
        self.load_progress.setValue(0)
        self.load_progress.setFormat(f"Loading {name}")
        self.load_progress.setVisible(True)
        self.bar.showMessage(f"Loading {name}…")

    def show_load_progress(self, fraction: float, message: str) -> None:
        self.load_progress.setValue(round(1000 * fraction))
        self.load_progress.setToolTip(message)
        self.bar.showMessage(message)

    def hide_loading(self) -> None:
        self.load_progress.setVisible(False)
        self.bar.clearMessage()

    # -- renders ------------------------------------------------------------------------------
    def show_progress(self, fraction: float, text: str) -> None:
        self.job_progress.setVisible(True)
        self.job_progress.setValue(round(1000 * min(1.0, fraction)))
        self.job_progress.setFormat(f"{100 * fraction:.0f}%")
        if text:
            self.job_label.setText(text)

    def show_idle(self) -> None:
        self.job_progress.setVisible(False)
        self.job_label.setText("idle")

    # -- the open model -----------------------------------------------------------------------
    def show_device(self, text: str) -> None:
        self.device_label.setText(text or "…")
        self.device_label.setToolTip(f"Renders run on {text}" if text else "")

    def show_preprocessing(self, pre: Any, origin: str) -> None:
        """The preprocessing in force and where it came from (user, sidecar, metadata, default)."""
        if pre is None:
            self.preprocessing_label.setText("")
            self.preprocessing_label.setToolTip("")
            return
        self.preprocessing_label.setText(f"input: {pre.preset} ({pre.source})")
        self.preprocessing_label.setToolTip(
            f"Preprocessing {pre.describe()}\nFrom: {origin}. Change it in Render Settings > Model."
        )
        warn = pre.source == "default"
        self.preprocessing_label.setStyleSheet("color: #b26a00;" if warn else "")

    def show_parity(self, parity: Any, *, loaded: bool = True) -> None:
        """The converted model vs onnxruntime, as the relative difference ``fvdesk info`` gives
        (an absolute one of 7e+14 on a model with huge activations is not a failure)."""
        label = self.parity_label
        if not loaded:
            label.setText("")
            label.setToolTip("")
            label.setStyleSheet("")
            return
        if parity is None:
            label.setText("parity not checked")
            label.setToolTip("The conversion was not compared with onnxruntime.")
            label.setStyleSheet("")
            return
        flag = "" if parity.ok else " ⚠ above tolerance"
        label.setText(f"parity {parity.rel_diff:.1e} relative{flag}")
        label.setToolTip(
            f"Converted torch model vs onnxruntime: {parity.describe()}; relative tolerance "
            f"{parity.tolerance:g}."
            + ("" if parity.ok else "\nRenders may not reflect what the ONNX model computes.")
        )
        label.setStyleSheet("" if parity.ok else "color: #c62828; font-weight: bold;")

    def show_model(self, model: Any, pre: Any, origin: str) -> None:
        if model is None:
            self.device_label.setText("no model")
            self.device_label.setToolTip("")
        else:
            self.show_device("")
        self.show_preprocessing(pre, origin)
        self.show_parity(model.parity if model is not None else None, loaded=model is not None)
