"""Tiles: the plain data of one image on the canvas, the list model that holds them and the
delegate that paints one.

A tile is plain data (``Tile``); the model holds them in order and signals single-row changes so a
live preview repaints one tile, not the grid.  Painting is one delegate (no widget per tile), so a
layer of 2048 units is a grid of 2048 tiles without 2048 widgets.  The view is
``fvdesk.gui.canvas.tile_view``, the zoom window ``fvdesk.gui.canvas.zoom``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QPersistentModelIndex,
    QRect,
    QRectF,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontMetrics,
    QImage,
    QPainter,
    QPainterPath,
    QPalette,
    QPen,
)
from PySide6.QtWidgets import (
    QStyle,
    QStyledItemDelegate,
    QStyleOptionViewItem,
)

_ROOT = QModelIndex()  # the invalid index, shared as a default argument
QUEUED, RUNNING, DONE, CANCELLED, FAILED = "queued", "running", "done", "cancelled", "failed"
STATES = (QUEUED, RUNNING, DONE, CANCELLED, FAILED)
TileRole = Qt.ItemDataRole.UserRole + 10
_tile_ids = itertools.count(1)

MIN_TILE, MAX_TILE, DEFAULT_TILE = 48, 512, 144


def caption_layer(name: str) -> str:
    """Deprecated: tiles show the core's captions as they are saved; a short layer name for
    tight texts is ``fvdesk.core.model.graph.short_name``."""
    warnings.warn(
        "qt_tiles.caption_layer is deprecated; use fvdesk.core.model.graph.short_name",
        DeprecationWarning,
        stacklevel=2,
    )
    from fvdesk.core.model.graph import short_name

    return short_name(name)


def to_qimage(array: np.ndarray) -> QImage:
    """An ``uint8`` HxWxC (C = 1, 3, 4) or HxW array as a ``QImage`` that owns its memory."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        a = np.clip(a * (255.0 if a.dtype.kind == "f" and a.max() <= 1.0 else 1.0), 0, 255).astype(
            np.uint8
        )
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    a = np.ascontiguousarray(a)
    h, w = a.shape[:2]
    if a.ndim == 2:
        return QImage(a.data, w, h, w, QImage.Format.Format_Grayscale8).copy()
    if a.shape[2] == 4:
        return QImage(a.data, w, h, 4 * w, QImage.Format.Format_RGBA8888).copy()
    return QImage(a[:, :, :3].copy().data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


@dataclass(eq=False)
class Tile:
    """One image on the canvas: what it shows, how far it got, and what produced it.

    ``spec`` and ``slot`` are the core job spec and the slot of the image (events and results
    find their tile by slot); ``row`` > 0 lays consecutive tiles with that value out on a row of
    their own (a strip of related images, e.g. an interpolation).
    """

    layer: str
    unit: int  # -1 when the objective is not one unit (DeepDream, combination)
    kind: str
    caption: str  # the core's caption (presentation.SlotView), what a gallery saves
    label: str | None = None
    facet: int = 0
    negative: bool = False
    state: str = QUEUED
    step: int = 0
    steps: int = 0
    value: float | None = None
    message: str = ""
    image: QImage | None = None
    array: np.ndarray | None = None  # final uint8 image, what a gallery saves
    job_id: int = 0
    spec: Any = None  # the JobSpec the tile belongs to
    slot: int = 0
    row: int = 0
    result: Any = None  # the job's UnitResult, or the GalleryItem of an opened gallery
    settings: dict = field(default_factory=dict)
    model_name: str = ""
    model_file: str = ""
    model_sha: str = ""
    dead: bool = False
    id: int = field(default_factory=lambda: next(_tile_ids))

    @property
    def finished(self) -> bool:
        return self.state in (DONE, CANCELLED, FAILED)

    @property
    def progress(self) -> float:
        return self.step / self.steps if self.steps else 0.0

    def title(self) -> str:
        return self.caption

    def status_text(self) -> str:
        if self.state == RUNNING:
            return f"{100 * self.progress:.0f}%" if self.steps else "starting"
        if self.state == DONE:
            return (
                f"{self.value:.3g}"
                if self.value is not None and math.isfinite(self.value)
                else "done"
            )
        return self.state


class TileModel(QAbstractListModel):
    """The canvas's tiles in display order, addressable by tile id."""

    tiles_changed = Signal()  # rows inserted/removed or states changed (for counters)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._tiles: list[Tile] = []
        self._row_of: dict[int, int] = {}

    # -- access -------------------------------------------------------------------------------
    def tiles(self) -> list[Tile]:
        return list(self._tiles)

    def row_keys(self) -> list[int]:
        """Each tile's ``row`` (what the view lays out strips by)."""
        return [t.row for t in self._tiles]

    def tile(self, tile_id: int) -> Tile | None:
        row = self._row_of.get(tile_id)
        return self._tiles[row] if row is not None else None

    def tile_at(self, index: QModelIndex | QPersistentModelIndex) -> Tile | None:
        if not index.isValid() or index.row() >= len(self._tiles):
            return None
        return self._tiles[index.row()]

    def index_of(self, tile_id: int) -> QModelIndex:
        row = self._row_of.get(tile_id)
        return self.index(row, 0) if row is not None else QModelIndex()

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for t in self._tiles:
            out[t.state] += 1
        return out

    # -- edits --------------------------------------------------------------------------------
    def add(self, tiles: list[Tile]) -> None:
        if not tiles:
            return
        first = len(self._tiles)
        self.beginInsertRows(QModelIndex(), first, first + len(tiles) - 1)
        for i, t in enumerate(tiles):
            self._tiles.append(t)
            self._row_of[t.id] = first + i
        self.endInsertRows()
        self.tiles_changed.emit()

    def remove(self, tile_ids: set[int]) -> list[Tile]:
        """Remove tiles by id (contiguous runs at once, so a huge selection stays quick)."""
        rows = sorted((self._row_of[i] for i in tile_ids if i in self._row_of), reverse=True)
        removed: list[Tile] = []
        run: list[int] = []
        for row in [*rows, -2]:
            if run and row != run[-1] - 1:
                lo, hi = run[-1], run[0]
                self.beginRemoveRows(QModelIndex(), lo, hi)
                removed.extend(self._tiles[lo : hi + 1])
                del self._tiles[lo : hi + 1]
                self.endRemoveRows()
                run = []
            run.append(row)
        self._row_of = {t.id: r for r, t in enumerate(self._tiles)}
        if removed:
            self.tiles_changed.emit()
        return removed

    def clear(self) -> list[Tile]:
        removed = self._tiles
        self.beginResetModel()
        self._tiles, self._row_of = [], {}
        self.endResetModel()
        self.tiles_changed.emit()
        return removed

    def update(self, tile: Tile, *, state_changed: bool = False) -> None:
        """Repaint one tile after its fields were changed in place."""
        row = self._row_of.get(tile.id)
        if row is not None:
            idx = self.index(row, 0)
            self.dataChanged.emit(idx, idx)
            if state_changed:
                self.tiles_changed.emit()

    # -- QAbstractListModel -------------------------------------------------------------------
    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self._tiles)

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        t = self.tile_at(index)
        if t is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return t.title()
        if role == TileRole:
            return t
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [t.title()]
            if t.label:
                lines.append(t.label)
            lines.append(
                f"state: {t.state}" + (f" (step {t.step}/{t.steps})" if t.state == RUNNING else "")
            )
            if t.value is not None:
                lines.append(f"objective: {t.value:.4g}")
            if t.dead:
                lines.append("dead unit: the objective stayed at zero")
            if t.message:
                lines.append(t.message)
            return "\n".join(lines)
        return None

    def flags(self, index: QModelIndex | QPersistentModelIndex) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable


class TileDelegate(QStyledItemDelegate):
    """Paints a tile: image (or placeholder), progress, state overlay and a two-line caption."""

    PAD = 6

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.tile_px = DEFAULT_TILE

    def _line_h(self, option: QStyleOptionViewItem) -> int:
        return QFontMetrics(option.font).height()

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        line = self._line_h(option)
        return QSize(self.tile_px + 2 * self.PAD, self.tile_px + 2 * self.PAD + 2 * line + 2)

    def paint(
        self,
        painter: QPainter,
        option: QStyleOptionViewItem,
        index: QModelIndex | QPersistentModelIndex,
    ) -> None:
        tile: Tile | None = index.data(TileRole)
        if tile is None:
            return
        painter.save()
        painter.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        pal = option.palette
        r = option.rect.adjusted(1, 1, -1, -1)
        selected = bool(option.state & QStyle.StateFlag.State_Selected)
        hover = bool(option.state & QStyle.StateFlag.State_MouseOver)
        bg = (
            pal.color(QPalette.ColorRole.Highlight)
            if selected
            else pal.color(QPalette.ColorRole.AlternateBase)
        )
        if hover and not selected:
            bg = bg.darker(106)
        path = QPainterPath()
        path.addRoundedRect(QRectF(r), 6, 6)
        painter.fillPath(path, bg)
        if tile.state == FAILED:
            painter.setPen(QPen(QColor(200, 40, 40), 2))
            painter.drawPath(path)

        s = self.tile_px
        img_rect = QRect(r.left() + self.PAD - 1, r.top() + self.PAD - 1, s, s)
        self._paint_image(painter, img_rect, tile)
        self._paint_overlay(painter, img_rect, tile, option)

        # caption: line 1 the unit and its value (or state), line 2 the class label / kind
        line = self._line_h(option)
        text_color = pal.color(
            QPalette.ColorRole.HighlightedText if selected else QPalette.ColorRole.Text
        )
        dim = QColor(text_color)
        dim.setAlpha(170)
        y = img_rect.bottom() + 3
        fm = QFontMetrics(option.font)
        status = tile.status_text()
        status_w = fm.horizontalAdvance(status) + 6
        top = QRect(img_rect.left(), y, s, line)
        state_color = {FAILED: QColor(210, 50, 50), CANCELLED: QColor(170, 120, 20)}.get(
            tile.state, dim if tile.state in (QUEUED, RUNNING) else text_color
        )
        painter.setFont(option.font)
        painter.setPen(state_color)
        painter.drawText(top, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, status)
        bold = QFont(option.font)
        bold.setBold(True)
        painter.setFont(bold)
        painter.setPen(text_color)
        title_w = max(0, s - status_w)
        painter.drawText(
            top.adjusted(0, 0, -status_w, 0),
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
            QFontMetrics(bold).elidedText(tile.title(), Qt.TextElideMode.ElideLeft, title_w),
        )
        painter.setFont(option.font)
        second = QRect(img_rect.left(), y + line, s, line)
        left_text = tile.label or (
            "dead unit" if tile.dead else "" if tile.kind == "channel" else tile.kind
        )
        painter.setPen(dim)
        painter.drawText(
            second,
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
            fm.elidedText(left_text, Qt.TextElideMode.ElideRight, s),
        )
        painter.restore()

    def _paint_image(self, painter: QPainter, rect: QRect, tile: Tile) -> None:
        painter.fillRect(rect, QColor(38, 38, 42))
        if tile.image is None or tile.image.isNull():
            return
        iw, ih = tile.image.width(), tile.image.height()
        scale = min(rect.width() / iw, rect.height() / ih)
        w, h = max(1, round(iw * scale)), max(1, round(ih * scale))
        target = QRect(
            rect.left() + (rect.width() - w) // 2, rect.top() + (rect.height() - h) // 2, w, h
        )
        # Enlarging: nearest neighbour (the pixels are the data); shrinking: smooth.
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, scale < 1.0)
        painter.drawImage(target, tile.image)

    def _paint_overlay(
        self, painter: QPainter, rect: QRect, tile: Tile, option: QStyleOptionViewItem
    ) -> None:
        small = QFont(option.font)
        small.setPointSizeF(max(7.0, option.font.pointSizeF() * 0.9))
        painter.setFont(small)
        if tile.state == RUNNING:
            bar = QRect(rect.left(), rect.bottom() - 5, rect.width(), 6)
            painter.fillRect(bar, QColor(0, 0, 0, 150))
            done = QRect(bar.left(), bar.top(), round(bar.width() * tile.progress), bar.height())
            painter.fillRect(done, option.palette.color(QPalette.ColorRole.Highlight).lighter(120))
            if tile.image is None:
                self._centered(painter, rect, "optimizing…", QColor(220, 220, 220))
        elif tile.state == QUEUED:
            self._centered(painter, rect, "queued", QColor(170, 170, 170))
        elif tile.state == CANCELLED:
            painter.fillRect(rect, QColor(0, 0, 0, 110))
            self._centered(painter, rect, "cancelled", QColor(255, 220, 120))
        elif tile.state == FAILED:
            painter.fillRect(rect, QColor(60, 0, 0, 170))
            inner = rect.adjusted(6, 6, -6, -6)
            painter.setPen(QColor(255, 200, 200))
            painter.drawText(
                inner,
                Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                "failed\n" + (tile.message or ""),
            )
        elif tile.dead and tile.state == DONE:
            badge = QRect(rect.left() + 4, rect.top() + 4, 40, 16)
            painter.fillRect(badge, QColor(0, 0, 0, 160))
            painter.setPen(QColor(255, 200, 120))
            painter.drawText(badge, Qt.AlignmentFlag.AlignCenter, "dead")

    @staticmethod
    def _centered(painter: QPainter, rect: QRect, text: str, color: QColor) -> None:
        painter.setPen(color)
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, text)
