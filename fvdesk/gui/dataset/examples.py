"""Dataset examples in the app: the panel beside a render.

``ExamplesPanel`` shows one unit's most and least exciting images of the user's folder: each the
whole image with the unit's receptive-field box drawn on it, and the crop, with its value; and the
unit's histogram over the folder with the render's own value marked.  Double-clicking an example
asks for it to be opened (``open_requested``; by default the system viewer).  The layer-wide view
is ``dataset.browser``, the folder choice ``dataset.dialog``; the window wires them
through ``dataset.controller``.  Model work goes through a ``JobRunner`` (``runtime.runners``),
never the GUI thread.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QPointF, QRect, QRectF, QSize, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QImage, QPainter, QPen
from PySide6.QtWidgets import QFrame, QGridLayout, QLabel, QMenu, QScrollArea, QVBoxLayout, QWidget

from fvdesk.gui.canvas.tiles import to_qimage
from fvdesk.gui.runtime.runners import JobRunner


def open_in_viewer(path: Path) -> None:
    """The default for ``open_requested``: the system's image viewer."""
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def percent_text(fraction: float) -> str:
    """``99.7%``, with ``<0.1%`` / ``>99.9%`` at the ends (a render usually beats every image)."""
    if not math.isfinite(fraction):
        return "n/a"
    p = 100 * fraction
    if 0 < p < 0.1:
        return "<0.1%"
    if 99.9 < p < 100:
        return ">99.9%"
    return f"{p:.1f}%"


# ------------------------------------------------------------------------------------------------
# One unit: the panel
# ------------------------------------------------------------------------------------------------
class ExampleTile(QFrame):
    """One example: the whole image with the receptive-field box, the crop, the value."""

    activated = Signal(object)  # the Example
    inspect = Signal(object)  # the Example: open it in the image inspector

    FULL, CROP = 112, 72

    def __init__(self, example: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.example = example
        self.full: QImage | None = None
        self.crop: QImage | None = None
        self.box: tuple[float, float, float, float] | None = None
        self.failed = False
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedSize(self.FULL + self.CROP + 14, self.FULL + 22)
        self.setToolTip(
            f"{example.rel}\nvalue {example.value:.4g} at grid ({example.grid[1]}, {example.grid[0]})\n"
            "double-click to open"
        )

    @property
    def loaded(self) -> bool:
        return self.full is not None or self.failed

    def set_images(self, images: Any | None) -> None:
        """``ExampleImages`` from the core, or ``None`` when the file cannot be read any more."""
        if images is None:
            self.failed = True
        else:
            self.full, self.crop, self.box = (
                to_qimage(images.full),
                to_qimage(images.crop),
                images.box,
            )
        self.update()

    def mouseDoubleClickEvent(self, e: Any) -> None:
        self.activated.emit(self.example)

    def contextMenuEvent(self, e: Any) -> None:
        menu = QMenu(self)
        menu.addAction("Inspect This Image", lambda: self.inspect.emit(self.example))
        menu.addAction("Open in Viewer", lambda: self.activated.emit(self.example))
        menu.exec(e.globalPos())

    def paintEvent(self, e: Any) -> None:
        super().paintEvent(e)
        p = QPainter(self)
        r_full = QRect(4, 4, self.FULL, self.FULL)
        r_crop = QRect(8 + self.FULL, 4, self.CROP, self.CROP)
        if self.full is None:
            text = "unreadable" if self.failed else "loading…"
            p.drawText(r_full, Qt.AlignmentFlag.AlignCenter, text)
        else:
            target = fit_rect(self.full.size(), r_full)
            p.drawImage(target, self.full)
            if self.box is not None:
                s = target.width() / max(1, self.full.width())
                x0, y0, x1, y1 = self.box
                p.setPen(QPen(QColor(255, 40, 40), 2))
                p.drawRect(
                    QRectF(target.x() + x0 * s, target.y() + y0 * s, (x1 - x0) * s, (y1 - y0) * s)
                )
        if self.crop is not None:
            p.drawImage(fit_rect(self.crop.size(), r_crop), self.crop)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(QRect(4, 6 + self.FULL, self.width() - 8, 16), Qt.AlignmentFlag.AlignLeft,
                   f"{self.example.value:.4g}  {Path(self.example.rel).name}")  # fmt: skip
        p.end()


def fit_rect(size: QSize, rect: QRect) -> QRect:
    """``size`` scaled into ``rect`` keeping its aspect ratio, centred."""
    s = min(rect.width() / max(1, size.width()), rect.height() / max(1, size.height()))
    w, h = max(1, round(size.width() * s)), max(1, round(size.height() * s))
    return QRect(rect.x() + (rect.width() - w) // 2, rect.y() + (rect.height() - h) // 2, w, h)


class HistogramWidget(QWidget):
    """The unit's objective values over the folder as bars; the render's value as a red line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edges: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.value: float | None = None
        self.setMinimumSize(180, 56)

    def set_histogram(self, view: Any | None, value: float | None = None) -> None:
        self.edges = None if view is None or not view.count else np.asarray(view.edges, float)
        self.counts = None if self.edges is None else np.asarray(view.counts, float)  # type: ignore[union-attr]  # edges is None when view is
        self.value = value
        self.update()

    def marker_x(self) -> float | None:
        """Where the render's value is drawn, in widget pixels (clamped to the axis)."""
        if self.edges is None or self.value is None or not math.isfinite(self.value):
            return None
        lo, hi = float(self.edges[0]), float(self.edges[-1])
        f = 0.5 if hi <= lo else (self.value - lo) / (hi - lo)
        return 2 + min(max(f, 0.0), 1.0) * (self.width() - 4)

    def paintEvent(self, e: Any) -> None:
        p = QPainter(self)
        if self.edges is None or self.counts is None:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no histogram")
            p.end()
            return
        w, h = self.width() - 4, self.height() - 14
        lo, hi = float(self.edges[0]), float(self.edges[-1])
        span = (hi - lo) or 1.0
        top = float(self.counts.max()) or 1.0
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(120, 150, 180))
        for i, c in enumerate(self.counts):
            x0 = 2 + (self.edges[i] - lo) / span * w
            x1 = 2 + (self.edges[i + 1] - lo) / span * w
            bh = c / top * h
            p.drawRect(QRectF(x0, 2 + h - bh, max(x1 - x0 - 0.5, 0.5), bh))
        x = self.marker_x()
        if x is not None:
            p.setPen(QPen(QColor(220, 30, 30), 2))
            p.drawLine(QPointF(x, 0), QPointF(x, h + 2))
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(QRect(2, h + 2, w, 12), Qt.AlignmentFlag.AlignLeft, f"{lo:.3g}")
        p.drawText(QRect(2, h + 2, w, 12), Qt.AlignmentFlag.AlignRight, f"{hi:.3g}")
        p.end()


class ExamplesPanel(QWidget):
    """One unit's dataset examples (see the module docstring).

    ``show_unit(examples, render_value=...)`` shows a ``UnitExamples``; images are decoded through
    the runner and a newer ``show_unit`` makes older results be dropped.
    """

    open_requested = Signal(object)  # Path of the example's image
    inspect_requested = Signal(object)  # Path of the example's image, for the image inspector
    loaded = Signal()  # every tile of the current unit has its images

    COLUMNS = 3

    def __init__(self, runner: JobRunner, parent: QWidget | None = None, *,
                 open_externally: bool = True) -> None:  # fmt: skip
        super().__init__(parent)
        self.runner = runner
        self.examples: Any = None
        self.tiles: list[ExampleTile] = []
        self._generation = 0
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.histogram = HistogramWidget()
        self.hist_text = QLabel()
        self.hist_text.setWordWrap(True)
        self.top_label, self.bottom_label = (
            QLabel("<b>Most excited</b>"),
            QLabel("<b>Least excited</b>"),
        )
        self.top_grid, self.bottom_grid = QGridLayout(), QGridLayout()
        body = QWidget()
        lay = QVBoxLayout(body)
        for w in (self.title, self.status, self.histogram, self.hist_text, self.top_label):
            lay.addWidget(w)
        lay.addLayout(self.top_grid)
        lay.addWidget(self.bottom_label)
        lay.addLayout(self.bottom_grid)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        if open_externally:
            self.open_requested.connect(open_in_viewer)
        self.clear("Choose a dataset (an image folder) to see the images each unit responds to.")

    def clear(self, message: str = "") -> None:
        self._generation += 1
        self.examples = None
        self._set_tiles([], [])
        self.title.setText("")
        self.status.setText(message)
        self.histogram.set_histogram(None)
        self.hist_text.setText("")
        self.top_label.hide()
        self.bottom_label.hide()

    def show_unit(
        self, examples: Any, *, render_value: float | None = None, title: str = ""
    ) -> None:
        """Show ``examples`` (a ``UnitExamples``), with ``render_value`` marked (the value of the
        selected render, in the same measure: the unit's objective)."""
        if examples is None:
            self.clear()
            return
        self._generation += 1
        gen = self._generation
        self.examples = examples
        self.title.setText(title or f"<b>{examples.layer}:{examples.unit}</b>")
        self.status.setText(f"{examples.count:,} images in {examples.root}")
        self.histogram.set_histogram(examples.histogram, render_value)
        self.hist_text.setText(self._histogram_text(examples, render_value))
        self._set_tiles(examples.top, examples.bottom)
        self.top_label.setVisible(bool(examples.top))
        self.bottom_label.setVisible(bool(examples.bottom))
        wanted = [t.example for t in self.tiles]
        root = examples.root

        def load() -> list[Any]:
            from fvdesk.core.output.examples import Crops

            crops = Crops()
            return [crops.get(root, ex) for ex in wanted]

        self.runner.call(load, lambda images: self._on_images(gen, images),
                         lambda msg: self._on_failed(gen, msg))  # fmt: skip

    @staticmethod
    def _histogram_text(ux: Any, value: float | None) -> str:
        h = ux.histogram
        if not h.count:
            return ""
        what = "channel mean" if ux.measure == "channel" else ux.measure
        text = (
            f"{what} over the images: median {h.percentile(50):.3g}, 99th percentile "
            f"{h.percentile(99):.3g}, max {h.maximum:.3g}."
        )
        if value is not None and math.isfinite(value):
            text += f" The render ({value:.3g}) is above {percent_text(ux.fraction_below(value))} of them."
        return text

    def _set_tiles(self, top: Sequence[Any], bottom: Sequence[Any]) -> None:
        for t in self.tiles:
            t.setParent(None)
            t.deleteLater()
        self.tiles = []
        for grid, examples in ((self.top_grid, top), (self.bottom_grid, bottom)):
            for i, ex in enumerate(examples):
                tile = ExampleTile(ex)
                tile.activated.connect(self._activate)
                tile.inspect.connect(self._inspect)
                grid.addWidget(tile, i // self.COLUMNS, i % self.COLUMNS)
                self.tiles.append(tile)

    def _activate(self, example: Any) -> None:
        if self.examples is not None:
            self.open_requested.emit(self.examples.root / example.rel)

    def _inspect(self, example: Any) -> None:
        if self.examples is not None:
            self.inspect_requested.emit(self.examples.root / example.rel)

    def _on_images(self, gen: int, images: list[Any]) -> None:
        if gen != self._generation:
            return  # another unit is shown by now
        for tile, im in zip(self.tiles, images, strict=False):
            tile.set_images(im)
        self.loaded.emit()

    def _on_failed(self, gen: int, message: str) -> None:
        if gen == self._generation:
            self.status.setText(message)
