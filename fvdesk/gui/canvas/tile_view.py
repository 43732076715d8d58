"""The tile canvas: a grid of equal tiles that wraps left to right, with rows of related tiles.

A plain ``QListView`` cannot force a line break, and a strip of related images (an interpolation
between two units, one image per regularization strength) reads as a row.  So the view lays tiles
out itself: they flow left to right and wrap, and consecutive tiles with the same ``Tile.row``
(> 0) start on a line of their own and end it.  Only the tiles in sight are painted, through one
delegate, so a layer of thousands of units costs one rectangle per tile.

Selection, rubber bands, keyboard navigation and scrolling come from ``QAbstractItemView``; the
view answers its geometry questions (``visualRect``, ``indexAt``, ``moveCursor``, ...).
"""

from __future__ import annotations

import bisect

from PySide6.QtCore import (
    QItemSelection,
    QItemSelectionModel,
    QModelIndex,
    QPersistentModelIndex,
    QPoint,
    QRect,
    QSize,
    Qt,
    Signal,
)
from PySide6.QtGui import QMouseEvent, QPainter, QPalette, QRegion, QWheelEvent
from PySide6.QtWidgets import QAbstractItemView, QStyle, QStyleOptionViewItem, QWidget

from fvdesk.gui.canvas.tiles import DEFAULT_TILE, MAX_TILE, MIN_TILE, Tile, TileDelegate, TileModel

_CA = QAbstractItemView.CursorAction


class TileView(QAbstractItemView):
    """The grid of tiles: multi-selection, Ctrl+wheel resizes the tiles, rows for strips."""

    zoom_requested = Signal(int)  # tile id
    tile_size_changed = Signal(int)

    SPACING = 4

    def __init__(self, model: TileModel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.empty_text = ""
        self._rects: list[QRect] | None = None
        self._tops: list[int] = []
        self._height = 0
        self._hover = -1
        self.setObjectName("tileView")
        self.delegate = TileDelegate(self)
        self.delegate.tile_px = DEFAULT_TILE
        self.setItemDelegate(self.delegate)
        self.setModel(model)
        self.setMouseTracking(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.doubleClicked.connect(self._on_double_click)
        for sig in (model.rowsInserted, model.rowsRemoved, model.modelReset, model.layoutChanged):
            sig.connect(self._invalidate)

    # -- public -------------------------------------------------------------------------------
    def tile_model(self) -> TileModel:
        return self.model()  # type: ignore[return-value]  # the view's model is always a TileModel

    def set_tile_size(self, px: int) -> None:
        px = int(max(MIN_TILE, min(MAX_TILE, px)))
        if px == self.delegate.tile_px:
            return
        self.delegate.tile_px = px
        self._invalidate()
        self.tile_size_changed.emit(px)

    def tile_size(self) -> int:
        return self.delegate.tile_px

    def selected_tiles(self) -> list[Tile]:
        m = self.tile_model()
        rows = sorted(i.row() for i in self.selectionModel().selectedIndexes())
        return [t for t in (m.tile_at(m.index(r, 0)) for r in rows) if t is not None]

    def current_tile(self) -> Tile | None:
        idx = self.currentIndex()
        tile = self.tile_model().tile_at(idx) if idx.isValid() else None
        if tile is None:
            sel = self.selected_tiles()
            tile = sel[0] if sel else None
        return tile

    def lines(self) -> list[list[int]]:
        """The rows of the model on each line of the layout, top to bottom (for tests, tools)."""
        out: dict[int, list[int]] = {}
        for i, r in enumerate(self._layout()):
            out.setdefault(r.top(), []).append(i)
        return [out[k] for k in sorted(out)]

    # -- layout -------------------------------------------------------------------------------
    def _item_size(self) -> QSize:
        opt = QStyleOptionViewItem()
        self.initViewItemOption(opt)
        return self.delegate.sizeHint(opt, QModelIndex())

    def _invalidate(self, *_: object) -> None:
        self._rects = None
        self._hover = -1
        self.updateGeometries()
        self.viewport().update()

    def _layout(self) -> list[QRect]:
        if self._rects is not None:
            return self._rects
        size = self._item_size()
        w, h, sp = size.width(), size.height(), self.SPACING
        cols = max(1, (self.viewport().width() - sp) // (w + sp))
        rects: list[QRect] = []
        col = line = 0
        prev = 0
        for key in self.tile_model().row_keys():
            if col and (col >= cols or (key != prev and (key or prev))):
                col, line = 0, line + 1
            rects.append(QRect(sp + col * (w + sp), sp + line * (h + sp), w, h))
            col += 1
            prev = key
        self._rects = rects
        self._tops = [r.top() for r in rects]
        self._height = (sp + (line + 1) * (h + sp)) if rects else 0
        return rects

    def updateGeometries(self) -> None:
        self._layout()
        bar = self.verticalScrollBar()
        page = self.viewport().height()
        bar.setRange(0, max(0, self._height - page))
        bar.setPageStep(page)
        bar.setSingleStep(max(1, self._item_size().height() // 4))
        super().updateGeometries()

    def resizeEvent(self, e) -> None:  # noqa: ANN001 - QResizeEvent
        super().resizeEvent(e)
        self._invalidate()

    # -- QAbstractItemView geometry -----------------------------------------------------------
    def visualRect(self, index: QModelIndex | QPersistentModelIndex) -> QRect:
        rects = self._layout()
        if not index.isValid() or index.row() >= len(rects):
            return QRect()
        return rects[index.row()].translated(0, -self.verticalOffset())

    def indexAt(self, point: QPoint) -> QModelIndex:
        rects = self._layout()
        p = point + QPoint(0, self.verticalOffset())
        h = self._item_size().height()
        for i in range(bisect.bisect_left(self._tops, p.y() - h), len(rects)):
            if rects[i].top() > p.y():
                break
            if rects[i].contains(p):
                return self.model().index(i, 0)
        return QModelIndex()

    def scrollTo(self, index: QModelIndex | QPersistentModelIndex, hint=None) -> None:  # noqa: ANN001
        rect = self.visualRect(index)
        if rect.isNull():
            return
        bar = self.verticalScrollBar()
        if rect.top() < 0:
            bar.setValue(bar.value() + rect.top() - self.SPACING)
        elif rect.bottom() > self.viewport().height():
            bar.setValue(bar.value() + rect.bottom() - self.viewport().height() + self.SPACING)

    def horizontalOffset(self) -> int:
        return 0

    def verticalOffset(self) -> int:
        return self.verticalScrollBar().value()

    def isIndexHidden(self, index: QModelIndex | QPersistentModelIndex) -> bool:
        return False

    def moveCursor(self, action: QAbstractItemView.CursorAction, modifiers) -> QModelIndex:  # noqa: ANN001
        rects = self._layout()
        n = len(rects)
        if not n:
            return QModelIndex()
        cur = self.currentIndex().row() if self.currentIndex().isValid() else -1
        if cur < 0 or action == _CA.MoveHome:
            return self.model().index(0, 0)
        if action == _CA.MoveEnd:
            return self.model().index(n - 1, 0)
        if action in (_CA.MoveLeft, _CA.MovePrevious):
            return self.model().index(max(0, cur - 1), 0)
        if action in (_CA.MoveRight, _CA.MoveNext):
            return self.model().index(min(n - 1, cur + 1), 0)
        r = rects[cur]
        step = r.height() + self.SPACING
        dy = {_CA.MoveUp: -step, _CA.MoveDown: step}.get(action)
        if dy is None:  # page up / down
            page = max(step, self.viewport().height() // step * step)
            dy = -page if action == _CA.MovePageUp else page
        return self.model().index(self._nearest(r.center().x(), r.top() + dy, cur), 0)

    def _nearest(self, x: int, top: int, fallback: int) -> int:
        """The tile on the line nearest to ``top`` whose centre is closest to ``x``."""
        rects = self._layout()
        tops = sorted(set(self._tops))
        if not tops:
            return fallback
        k = min(range(len(tops)), key=lambda i: abs(tops[i] - top))
        lo = bisect.bisect_left(self._tops, tops[k])
        hi = bisect.bisect_right(self._tops, tops[k])
        return min(range(lo, hi), key=lambda i: abs(rects[i].center().x() - x))

    def setSelection(self, rect: QRect, command: QItemSelectionModel.SelectionFlag) -> None:
        area = rect.normalized().translated(0, self.verticalOffset())
        sel = QItemSelection()
        model = self.model()
        start = None
        rects = self._layout()
        for i, r in enumerate([*rects, None]):
            hit = r is not None and r.intersects(area)
            if hit and start is None:
                start = i
            elif not hit and start is not None:
                sel.select(model.index(start, 0), model.index(i - 1, 0))
                start = None
        self.selectionModel().select(sel, command)

    def visualRegionForSelection(self, selection: QItemSelection) -> QRegion:
        region = QRegion()
        view = self.viewport().rect()
        for rng in selection:  # type: ignore[attr-defined]  # PySide6's stubs miss QItemSelection.__iter__
            for row in range(rng.top(), rng.bottom() + 1):
                r = self.visualRect(self.model().index(row, 0))
                if r.intersects(view):
                    region += r
        return region

    # -- painting and interaction -------------------------------------------------------------
    def paintEvent(self, e) -> None:  # noqa: ANN001 - QPaintEvent
        painter = QPainter(self.viewport())
        model = self.tile_model()
        rects = self._layout()
        if not rects:
            if self.empty_text:
                painter.setPen(self.palette().color(QPalette.ColorRole.PlaceholderText))
                painter.drawText(
                    self.viewport().rect().adjusted(24, 24, -24, -24),
                    Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                    self.empty_text,
                )
            painter.end()
            return
        dy = self.verticalOffset()
        area = e.rect().translated(0, dy)
        base = QStyleOptionViewItem()
        self.initViewItemOption(base)
        sel = self.selectionModel()
        current = self.currentIndex()
        first = bisect.bisect_left(self._tops, area.top() - rects[0].height())
        for i in range(first, len(rects)):
            r = rects[i]
            if r.top() > area.bottom():
                break
            if not r.intersects(area):
                continue
            idx = model.index(i, 0)
            opt = QStyleOptionViewItem(base)
            opt.rect = r.translated(0, -dy)
            state = opt.state
            if sel.isSelected(idx):
                state |= QStyle.StateFlag.State_Selected
            if i == self._hover:
                state |= QStyle.StateFlag.State_MouseOver
            if idx == current and self.hasFocus():
                state |= QStyle.StateFlag.State_HasFocus
            opt.state = state
            self.delegate.paint(painter, opt, idx)
        painter.end()

    def mouseMoveEvent(self, e: QMouseEvent) -> None:
        row = self.indexAt(e.position().toPoint()).row()
        if row != self._hover:
            old, self._hover = self._hover, row
            for r in (old, row):
                if r >= 0:
                    self.viewport().update(self.visualRect(self.model().index(r, 0)))
        super().mouseMoveEvent(e)

    def leaveEvent(self, e) -> None:  # noqa: ANN001 - QEvent
        if self._hover >= 0:
            self.viewport().update(self.visualRect(self.model().index(self._hover, 0)))
        self._hover = -1
        super().leaveEvent(e)

    def _on_double_click(self, index: QModelIndex) -> None:
        tile = self.tile_model().tile_at(index)
        if tile is not None:
            self.zoom_requested.emit(tile.id)

    def wheelEvent(self, e: QWheelEvent) -> None:
        if e.modifiers() & Qt.KeyboardModifier.ControlModifier:
            step = 1.15 if e.angleDelta().y() > 0 else 1 / 1.15
            self.set_tile_size(round(self.tile_size() * step))
            e.accept()
            return
        super().wheelEvent(e)
