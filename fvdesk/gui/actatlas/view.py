"""``AtlasView``: the cells of an activation atlas on a zoomable map.

Pan by dragging, zoom with the wheel (anchored under the pointer).  Level of detail: far out each
cell paints a small thumbnail, close in its full tile (``THUMB_PX`` decides where).  Hovering a
cell emits ``hovered(cell)`` (its manifest record), a double-click ``activated(cell)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPixmap, QWheelEvent
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsScene,
    QGraphicsSceneHoverEvent,
    QGraphicsSceneMouseEvent,
    QGraphicsView,
    QStyleOptionGraphicsItem,
    QWidget,
)

CELL = 128.0  # scene units per cell
THUMB_PX = 24  # the thumbnail's side; below twice this on screen, cells paint it
ZOOM_STEP = 1.25
ZOOM_RANGE = (0.05, 8.0)


def class_color(index: int) -> QColor:
    """A distinct hue per class (golden-angle spacing), for the class atlas's frames."""
    return QColor.fromHsv(int(index * 137.508) % 360, 200, 230)


class CellItem(QGraphicsItem):
    """One cell: its tile (thumbnail far out), a class-coloured frame, hover and double-click."""

    def __init__(self, view: AtlasView, cell: dict[str, Any], folder: Path) -> None:
        super().__init__()
        self.view, self.cell, self.folder = view, cell, folder
        self.full: QPixmap | None = None
        self.thumb: QPixmap | None = None
        self.lod = ""  # what the last paint drew: "thumb", "full" or "" (no tile yet)
        self.setPos(cell["i"] * CELL, cell["j"] * CELL)
        self.setAcceptHoverEvents(True)
        self.setToolTip(cell.get("caption", ""))
        self.load_tile()

    def load_tile(self) -> None:
        tile = self.cell.get("tile")
        if tile and (self.folder / tile).is_file():
            pm = QPixmap(str(self.folder / tile))
            if not pm.isNull():
                self.full = pm
                self.thumb = pm.scaled(THUMB_PX, THUMB_PX, Qt.AspectRatioMode.IgnoreAspectRatio,
                                       Qt.TransformationMode.SmoothTransformation)  # fmt: skip
        self.update()

    def boundingRect(self) -> QRectF:  # noqa: N802 - Qt's name
        return QRectF(0, 0, CELL, CELL)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem,
              widget: QWidget | None = None) -> None:  # fmt: skip
        rect = QRectF(2, 2, CELL - 4, CELL - 4)
        on_screen = option.levelOfDetailFromTransform(painter.worldTransform()) * CELL
        dim = self.view.class_filter is not None and self.class_index() != self.view.class_filter
        painter.setOpacity(0.15 if dim else 1.0)
        if self.full is None:
            painter.fillRect(rect, QColor(60, 60, 60))
            self.lod = ""
        elif on_screen < 2 * THUMB_PX and self.thumb is not None:
            painter.drawPixmap(rect, self.thumb, QRectF(self.thumb.rect()))
            self.lod = "thumb"
        else:
            painter.drawPixmap(rect, self.full, QRectF(self.full.rect()))
            self.lod = "full"
        k = self.class_index()
        if self.view.show_classes and k is not None:
            pen = painter.pen()
            pen.setColor(class_color(k))
            pen.setWidthF(4.0)
            painter.setPen(pen)
            painter.drawRect(rect)

    def class_index(self) -> int | None:
        cls = self.cell.get("class")
        return None if not cls else int(cls["index"])

    def hoverEnterEvent(self, event: QGraphicsSceneHoverEvent) -> None:  # noqa: N802
        self.view.hovered.emit(self.cell)
        super().hoverEnterEvent(event)

    def mouseDoubleClickEvent(self, event: QGraphicsSceneMouseEvent) -> None:  # noqa: N802
        self.view.activated.emit(self.cell)
        event.accept()


class AtlasView(QGraphicsView):
    """The map of an atlas folder's cells (``show_atlas``); tiles arrive with ``tile_ready``."""

    hovered = Signal(object)  # a cell's record
    activated = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("activationAtlasView")
        self.setScene(QGraphicsScene(self))
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setBackgroundBrush(QColor(24, 24, 24))
        self.items_by_id: dict[int, CellItem] = {}
        self.folder = Path()
        self.show_classes = True
        self.class_filter: int | None = None
        self.zoom = 1.0

    def show_atlas(self, folder: str | Path, manifest: dict[str, Any]) -> None:
        """Lay out every cell of ``manifest`` (rendered or not) and fit the map in view."""
        from fvdesk.core.output.actatlas import cell_caption

        self.scene().clear()
        self.items_by_id.clear()
        self.folder = Path(folder)
        n = int(manifest["job"]["grid"])
        for c in manifest["cells"]:
            cell = dict(c, caption=cell_caption(c))
            item = CellItem(self, cell, self.folder)
            self.scene().addItem(item)
            self.items_by_id[int(c["id"])] = item
        self.scene().setSceneRect(QRectF(0, 0, n * CELL, n * CELL))
        self.fit()

    def tile_ready(self, cell_id: int, tile: str) -> None:
        item = self.items_by_id.get(cell_id)
        if item is not None:
            item.cell["tile"] = tile
            item.load_tile()

    def fit(self) -> None:
        self.resetTransform()
        self.fitInView(self.scene().sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)
        self.zoom = self.transform().m11()

    def zoom_by(self, factor: float) -> None:
        lo, hi = ZOOM_RANGE
        target = min(max(self.zoom * factor, lo), hi)
        if target != self.zoom:
            self.scale(target / self.zoom, target / self.zoom)
            self.zoom = target

    def wheelEvent(self, event: QWheelEvent) -> None:  # noqa: N802 - Qt's name
        steps = event.angleDelta().y() / 120.0
        if steps:
            self.zoom_by(ZOOM_STEP**steps)
        event.accept()

    def set_class_filter(self, index: int | None) -> None:
        """Dim every cell that supports another class (``None``: show all)."""
        self.class_filter = index
        self.viewport().update()
