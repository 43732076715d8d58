"""The article's figures for the open model: a strip of tiles per job, filled live.

``FigureView`` shows one job as one row of tiles (one tile per slot: the job's images in order),
routes the job's events to them by slot, and cancels it.  It renders nothing itself: ``run``
builds the job spec and calls the ``Submit`` callable (``qt_jobrunner``) it was given.  The same
view serves the regularization spectrum row (``show_spectrum``), the steepest-descent view
(``show_steepest``, three first steps then three renders), interpolation strips and directions.
Results are ``UnitResult``s with provenance, so the window's gallery saving works on them as on
any tile (``FigureView.results()``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListView,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from fvdesk.gui.qt_jobrunner import Submit
from fvdesk.gui.qt_tiles import (
    CANCELLED,
    DONE,
    FAILED,
    QUEUED,
    RUNNING,
    Tile,
    TileModel,
    TileView,
    to_qimage,
)

#: What the steepest-descent view's six tiles show, in slot order.
STEEPEST_CAPTIONS = ("L2 (pixels) step", "L∞ (sign) step", "Decorrelated Fourier step",
                     "L2 (pixels) render", "L∞ (sign) render", "Decorrelated Fourier render")  # fmt: skip


def slot_captions(spec: Any) -> list[tuple[str, str]]:
    """(caption, second line) of each slot of ``spec`` before anything has rendered."""
    from fvdesk.core.optim import variants

    if spec.type == "spectrum":
        out = []
        for key in spec.variants:
            v = variants.variant(key)
            out.append((v.caption, f"{v.family} · {v.reference}"))
        return out
    if spec.type == "steepest":
        explain = [v.explain for v in variants.STEEPEST] * 2
        return list(zip(STEEPEST_CAPTIONS, explain, strict=True))
    if spec.type == "interpolation":
        return [(f"t={spec.t(s.index):.2f}", spec.title) for s in spec.slots()]
    if spec.type == "direction":
        return [(spec.describe(s.seed_keys[0]), "") for s in spec.slots()]
    return [(f"{spec.title} #{s.index}", "") for s in spec.slots()]


class FigureView(QWidget):
    """One job as a strip of tiles: title, tiles left to right, status, Cancel."""

    job_started = Signal(object)  # the spec
    job_finished = Signal(object)  # the JobResult (``cancelled`` says how it ended)
    job_failed = Signal(str)

    def __init__(
        self, submit: Submit, parent: QWidget | None = None, *, tile_px: int = 128
    ) -> None:
        super().__init__(parent)
        self.setObjectName("figureView")
        self._submit = submit
        self._cancel: Callable[[], None] | None = None
        self._results: dict[int, Any] = {}
        self.spec: Any = None
        self.title = QLabel("")
        self.title.setObjectName("figureTitle")
        self.title.setWordWrap(True)
        self.tiles = TileModel(self)
        self.view = TileView(self.tiles, self)
        self.view.setWrapping(False)
        self.view.setFlow(QListView.Flow.LeftToRight)
        self.view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.view.set_tile_size(tile_px)
        self.view.empty_text = "Nothing rendered yet."
        self.status = QLabel("idle")
        self.status.setObjectName("figureStatus")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(self.cancel_button)
        col = QVBoxLayout(self)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self.title)
        col.addWidget(self.view, 1)
        col.addLayout(row)

    # -- running --------------------------------------------------------------------------------
    def run(self, spec: Any, title: str = "") -> None:
        """Cancel what runs, lay out one tile per slot of ``spec`` and submit it."""
        self.cancel()
        self.spec = spec
        self._results = {}
        self.tiles.clear()
        layer = spec.layers[0] if spec.layers else ""
        tiles = [Tile(layer, -1, spec.type, cap, label or None, facet=i)
                 for i, (cap, label) in enumerate(slot_captions(spec))]  # fmt: skip
        self.tiles.add(tiles)
        self.title.setText(title or spec.title)
        self.status.setText(f"queued: {len(tiles)} image{'s' if len(tiles) != 1 else ''}")
        self.cancel_button.setEnabled(True)
        self.job_started.emit(spec)
        self._cancel = self._submit(spec, self)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel()
            self.status.setText("cancelling…")

    def busy(self) -> bool:
        return self._cancel is not None

    # -- the sink (called by the job controller on the GUI thread) ------------------------------
    def feed(self, ev: Any) -> None:
        name = type(ev).__name__
        if name in ("StepEvent", "PreviewEvent"):
            images = getattr(ev, "images", None)
            for k, slot in enumerate(ev.slots or ()):
                t = self._tile(slot)
                if t is None or t.finished:
                    continue
                t.state = RUNNING
                if name == "StepEvent":
                    t.step, t.steps = int(ev.step), int(ev.steps)
                    if k < len(ev.values):
                        t.value = float(ev.values[k])
                elif images is not None and k < len(images):
                    t.image = to_qimage(images[k])
                self.tiles.update(t, state_changed=True)
            if name == "StepEvent":
                self.status.setText(f"step {ev.step} of {ev.steps}")
        elif name == "UnitDoneEvent":
            r = ev.result
            self._results[r.slot] = r
            t = self._tile(r.slot)
            if t is not None:
                t.result, t.array, t.image = r, r.image, to_qimage(r.image)
                t.value, t.dead, t.state = float(r.value), bool(r.dead), DONE
                t.caption, t.label = r.caption or t.caption, r.label or t.label
                t.step = t.steps = int(r.steps)
                self.tiles.update(t, state_changed=True)
        elif name == "NoticeEvent":
            self.status.setText(ev.message)

    def finished(self, result: Any) -> None:
        self._close(CANCELLED if result.cancelled else DONE)
        done = sum(1 for t in self.tiles.tiles() if t.state == DONE)
        self.status.setText(("Cancelled: " if result.cancelled else "Done: ")
                            + f"{done} of {self.tiles.rowCount()} images.")  # fmt: skip
        self.job_finished.emit(result)

    def failed(self, message: str) -> None:
        self._close(FAILED, message)
        self.status.setText(message)
        self.job_failed.emit(message)

    # -- reading --------------------------------------------------------------------------------
    def results(self) -> list[Any]:
        """The finished images' ``UnitResult``s in slot order (provenance included)."""
        return [self._results[k] for k in sorted(self._results)]

    def images(self) -> list[np.ndarray | None]:
        return [t.array for t in self.tiles.tiles()]

    def _tile(self, slot: int) -> Tile | None:
        tiles = self.tiles.tiles()
        return tiles[slot] if 0 <= slot < len(tiles) else None

    def _close(self, state: str, message: str = "") -> None:
        self._cancel = None
        self.cancel_button.setEnabled(False)
        for t in self.tiles.tiles():
            if t.state in (QUEUED, RUNNING):
                t.state, t.message = state, message
                self.tiles.update(t, state_changed=True)


def show_spectrum(view: FigureView, terms: Sequence[Any], settings: Any) -> Any:
    """The "Regularization spectrum" action: the row for ``terms`` (a unit, or a combination);
    the learned prior's tile only when ``settings`` name a generator."""
    from fvdesk.core.optim.jobs import SpectrumJob
    from fvdesk.core.optim.variants import spectrum_keys

    spec = SpectrumJob(tuple(terms), variants=spectrum_keys(settings))
    view.run(spec, f"Regularization spectrum of {spec.title.removeprefix('spectrum of ')}")
    return spec


def show_steepest(view: FigureView, terms: Sequence[Any]) -> Any:
    """The "Steepest descent" action for ``terms``."""
    from fvdesk.core.optim.jobs import SteepestJob

    spec = SteepestJob(tuple(terms))
    view.run(
        spec,
        f"Steepest descent under three metrics, {spec.title.removeprefix('steepest descent for ')}",
    )
    return spec
