"""The status bar's permanent widgets: loading and render progress, cancel, and what the open
model runs with (device, where its preprocessing came from, conversion parity, what a partial
conversion left out).

Display only: the window connects the controllers' signals to these methods.  Time left comes from
the core's ``EtaEstimator`` (the CLI's policy), one estimator per source of progress, so a gallery
being saved while a render runs does not restart the render's estimate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QToolButton, QWidget

from fvdesk.core.progress import Estimate, EtaEstimator


def _separator() -> QWidget:
    line = QLabel("|")
    line.setEnabled(False)
    return line


class StatusWidgets:
    """The permanent widgets of a ``QStatusBar`` (``showMessage`` hides only the normal ones)."""

    def __init__(
        self, bar: QStatusBar, cancel: QAction, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bar = bar
        self._clock = clock
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
        self.cut_label = QLabel("")
        self.cut_label.setObjectName("cutLabel")
        self.cut_label.setStyleSheet("color: #b26a00;")
        self.cut_label.setVisible(False)
        self._etas: dict[str, EtaEstimator] = {}
        self._loading = ""  # the file being loaded (the load bar's text)
        for w in (self.load_progress, self.job_label, self.job_progress, self.cancel_button,
                  _separator(), self.device_label, _separator(), self.preprocessing_label,
                  _separator(), self.parity_label, self.cut_label):  # fmt: skip
            bar.addPermanentWidget(w)

    def estimate(self, source: str, fraction: float) -> Estimate:
        """Time left for ``source`` ("load", "jobs", "gallery"...): a new source, or progress
        that goes backwards (the next job), starts a fresh estimate."""
        eta = self._etas.get(source)
        if eta is None:
            eta = self._etas[source] = EtaEstimator(clock=self._clock)
            eta.reset(origin=fraction)  # work done before the first report is not speed
        return eta.update(fraction)

    def forget(self, source: str) -> None:
        """The work of ``source`` ended; its next progress starts a new estimate."""
        self._etas.pop(source, None)

    def finish(self, source: str) -> None:
        """``source``'s work ended: the bar goes idle unless another source is still at work."""
        self.forget(source)
        if not any(k != "load" for k in self._etas):
            self.show_idle()

    @staticmethod
    def _bar_text(est: Estimate) -> str:
        eta = est.eta_text
        return f"{100 * est.fraction:.0f}%" + (f" · {eta}" if eta else "")

    # -- loading ------------------------------------------------------------------------------
    def show_loading(self, name: str) -> None:
        self.forget("load")
        self._loading = name
        self.load_progress.setValue(0)
        self.load_progress.setFormat(f"Loading {name}")
        self.load_progress.setVisible(True)
        self.bar.showMessage(f"Loading {name}…")

    def show_load_progress(self, fraction: float, message: str) -> None:
        est = self.estimate("load", fraction)
        self.load_progress.setValue(round(1000 * min(1.0, fraction)))
        eta = est.eta_text
        self.load_progress.setFormat(f"Loading {self._loading}" + (f" · {eta}" if eta else ""))
        self.load_progress.setToolTip(f"{message}\n{est.describe()}")
        self.bar.showMessage(message)

    def hide_loading(self) -> None:
        self.forget("load")
        self.load_progress.setVisible(False)
        self.bar.clearMessage()

    # -- renders, galleries, atlases --------------------------------------------------------------
    def show_progress(self, fraction: float, text: str, source: str = "jobs") -> None:
        """Progress of ``source``'s work with its time left (the bar shows the latest source)."""
        est = self.estimate(source, fraction)
        self.job_progress.setVisible(True)
        self.job_progress.setValue(round(1000 * min(1.0, fraction)))
        self.job_progress.setFormat(self._bar_text(est))
        self.job_progress.setToolTip(est.describe())
        if text:
            self.job_label.setText(text)

    def show_idle(self) -> None:
        self._etas.clear()
        self.job_progress.setVisible(False)
        self.job_progress.setToolTip("")
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

    def show_cut(self, text: str | None) -> None:
        """A partially converted model: which node stopped the conversion, while it is open."""
        self.cut_label.setVisible(bool(text))
        self.cut_label.setText("⚠ partially converted" if text else "")
        self.cut_label.setToolTip(text or "")

    def show_model(self, model: Any, pre: Any, origin: str) -> None:
        if model is None:
            self.device_label.setText("no model")
            self.device_label.setToolTip("")
        else:
            self.show_device("")
        self.show_preprocessing(pre, origin)
        self.show_parity(model.parity if model is not None else None, loaded=model is not None)
        self.show_cut(getattr(model, "status_text", None))


def load_messages(model: Any, seconds: float) -> list[tuple[str, bool]]:
    """What the log says about a model just loaded: (text, also in the status bar) pairs."""
    spec = model.input
    out = [(f"Loaded {model.name} in {seconds:.1f} s: {len(model.graph)} layers, input "
            f"{spec.channels}×{spec.height}×{spec.width} {spec.layout}.", True)]  # fmt: skip
    if spec.size_multiple > 1 and not spec.fixed_size:
        out.append((f"{model.name} takes sizes that are multiples of {spec.size_multiple}; the "
                    "canvas size steps by it (another is refused) and octaves are rounded to one.",
                    False))  # fmt: skip
    out += [(f"Graph repair: {note}", False) for note in model.canonicalization]
    out += [(f"Warning: {w}", False) for w in model.warnings]
    if getattr(model, "status_text", None):  # partially converted: which node stopped it
        out.append((model.status_text, True))
    if model.preprocessing.source == "default":
        out.append((f"{model.name} does not say how its input was preprocessed; using the "
                    f"'{model.preprocessing.preset}' preset. Check it in Render Settings > Model.",
                    False))  # fmt: skip
    return out
