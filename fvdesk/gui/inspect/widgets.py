"""The inspector's drawing widgets: the image with a heat map over it, a bar chart of a vector
layer, and the activation grid laid out on the image.

They only display numpy arrays the core computed (``fvdesk.core.inspect.results``); the one
heat-map look is the core's ``overlay``, so a map on screen is the PNG saved in a gallery.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QMouseEvent, QPainter, QPaintEvent, QPixmap
from PySide6.QtWidgets import QSizePolicy, QToolTip, QWidget

from fvdesk.core.inspect.results import colormap, normalized, overlay
from fvdesk.gui.canvas.tiles import to_qimage


def pixmap_of(array: np.ndarray) -> QPixmap:
    """A uint8 (H, W, 3) array as a pixmap (copied: the array may go away)."""
    return QPixmap.fromImage(to_qimage(np.ascontiguousarray(array, dtype=np.uint8)))


def map_icon(m: np.ndarray, pixels: np.ndarray | None = None) -> QIcon:
    """A channel map as an icon: over the image when ``pixels`` is given (the map upsampled to
    the image's size by the core), else in the core's colour map."""
    if pixels is not None:
        return QIcon(pixmap_of(overlay(pixels, m)))
    return QIcon(pixmap_of(colormap(normalized(np.asarray(m, dtype=np.float32)))))


def _fit(size: QSize, bounds: QRect) -> QRect:
    """``size`` scaled to fit ``bounds`` keeping its aspect, centred."""
    scaled = size.scaled(bounds.size(), Qt.AspectRatioMode.KeepAspectRatio)
    x = bounds.x() + (bounds.width() - scaled.width()) // 2
    y = bounds.y() + (bounds.height() - scaled.height()) // 2
    return QRect(x, y, scaled.width(), scaled.height())


class ImageView(QWidget):
    """The inspected image, or a heat map over it, scaled to fit; a caption says which."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumSize(160, 160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.pixels: np.ndarray | None = None
        self.caption = ""
        self._pixmap: QPixmap | None = None
        self._placeholder = "Open an image (File > Open Image…) or drop one on the window."

    def set_image(self, pixels: np.ndarray | None, caption: str = "") -> None:
        self.pixels = pixels
        self._pixmap = pixmap_of(pixels) if pixels is not None else None
        self.caption = caption
        self.update()

    def show_heat(self, heat: np.ndarray | None, caption: str) -> None:
        """``heat`` (H, W) in [0, 1] over the image; None shows the image alone."""
        if self.pixels is None:
            return
        shown = self.pixels if heat is None else overlay(self.pixels, heat)
        self._pixmap = pixmap_of(shown)
        self.caption = caption
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(260, 280)

    def paintEvent(self, _event: QPaintEvent) -> None:
        p = QPainter(self)
        text_h = self.fontMetrics().height() + 4
        area = self.rect().adjusted(2, 2, -2, -2 - text_h)
        if self._pixmap is None:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                       self._placeholder)  # fmt: skip
            return
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawPixmap(_fit(self._pixmap.size(), area), self._pixmap)
        p.drawText(QRect(0, self.height() - text_h, self.width(), text_h),
                   Qt.AlignmentFlag.AlignCenter, self.caption)  # fmt: skip


class BarChart(QWidget):
    """A vector layer's values on the image, largest first (DVT's view of a fully connected
    layer); hover a bar for its unit."""

    MAX_BARS = 64

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMinimumHeight(120)
        self.setMouseTracking(True)
        self.bars: list[tuple[int, float, str | None]] = []  # unit, value, label

    def set_values(self, values: np.ndarray, order: Sequence[int] | np.ndarray,
                   labels: Sequence[str | None] | None = None) -> None:  # fmt: skip
        shown = [int(u) for u in order[: self.MAX_BARS]]
        self.bars = [(u, float(values[u]), labels[u] if labels else None) for u in shown]
        self.update()

    def _bar_at(self, x: int) -> int | None:
        if not self.bars:
            return None
        i = int(x * len(self.bars) / max(1, self.width()))
        return i if 0 <= i < len(self.bars) else None

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        i = self._bar_at(int(event.position().x()))
        if i is None:
            return
        unit, value, label = self.bars[i]
        text = f"unit {unit}: {value:.4g}" + (f" ({label})" if label else "")
        QToolTip.showText(event.globalPosition().toPoint(), text, self)

    def paintEvent(self, _event: QPaintEvent) -> None:
        if not self.bars:
            return
        p = QPainter(self)
        values = [v for _, v, _ in self.bars]
        top, low = max(max(values), 0.0), min(min(values), 0.0)
        span = (top - low) or 1.0
        w = self.width() / len(self.bars)
        zero = self.height() * top / span
        for i, v in enumerate(values):
            h = self.height() * abs(v) / span
            y = zero - h if v >= 0 else zero
            p.fillRect(int(i * w), int(y), max(1, int(w) - 1), max(1, int(h)),
                       QColor(60, 120, 200) if v >= 0 else QColor(200, 90, 60))  # fmt: skip
        p.setPen(QColor(120, 120, 120))
        p.drawLine(0, int(zero), self.width(), int(zero))


class GridView(QWidget):
    """The activation grid (Building Blocks): each cell's render drawn in its cell over the
    image; blank cells show the image.  Hover a cell for its top units; a click picks it."""

    cell_clicked = Signal(int, int)  # x, y

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setMouseTracking(True)
        self.setMinimumSize(160, 160)
        self.pixels: np.ndarray | None = None
        self.grid: object | None = None  # an ActivationGrid
        self.renders: dict[tuple[int, int], QPixmap] = {}
        #: ``describe(x, y) -> str`` the hover text of a cell (its top units, with labels).
        self.describe: Callable[[int, int], str] | None = None

    def set_grid(self, pixels: np.ndarray | None, grid: object | None) -> None:
        self.pixels, self.grid = pixels, grid
        self.renders = {}
        self.update()

    def set_render(self, x: int, y: int, image: np.ndarray) -> None:
        self.renders[(x, y)] = pixmap_of(image)
        self.update()

    def _area(self) -> QRect:
        shape = getattr(self.grid, "shape", None)
        if self.pixels is None or shape is None:
            return QRect()
        h, w = self.pixels.shape[:2]
        return _fit(QSize(w, h), self.rect().adjusted(2, 2, -2, -2))

    def cell_at(self, pos: QPoint) -> tuple[int, int] | None:
        area, shape = self._area(), getattr(self.grid, "shape", None)
        if shape is None or not area.contains(pos):
            return None
        gh, gw = shape
        x = (pos.x() - area.x()) * gw // max(1, area.width())
        y = (pos.y() - area.y()) * gh // max(1, area.height())
        return (int(min(x, gw - 1)), int(min(y, gh - 1)))

    def mouseMoveEvent(self, event: QMouseEvent) -> None:
        cell = self.cell_at(event.position().toPoint())
        if cell is not None and self.describe is not None:
            QToolTip.showText(event.globalPosition().toPoint(), self.describe(*cell), self)

    def mousePressEvent(self, event: QMouseEvent) -> None:
        cell = self.cell_at(event.position().toPoint())
        if cell is not None:
            self.cell_clicked.emit(*cell)

    def paintEvent(self, _event: QPaintEvent) -> None:
        area = self._area()
        if area.isEmpty() or self.pixels is None:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.drawPixmap(area, pixmap_of(self.pixels))
        gh, gw = self.grid.shape  # type: ignore[union-attr]  # set_grid took an ActivationGrid
        blank = self.grid.blank  # type: ignore[union-attr]  # likewise
        cw, ch = area.width() / gw, area.height() / gh
        p.setPen(QColor(255, 255, 255, 70))
        for y in range(gh):
            for x in range(gw):
                cell = QRect(int(area.x() + x * cw), int(area.y() + y * ch),
                             int(cw + 0.999), int(ch + 0.999))  # fmt: skip
                if (x, y) in self.renders:
                    p.drawPixmap(cell, self.renders[(x, y)])
                elif blank[y, x]:
                    p.fillRect(cell, QColor(0, 0, 0, 90))
                p.drawRect(cell)
