"""Picking a neuron: the article's ``layer[x, y, z]`` objective at a position on the layer's grid.

``NeuronPositionPicker`` shows the spatial grid of a feature map (its width x height cells) and
lets the user click the position; ``spec()`` is the ``UnitJob`` of kind ``neuron`` at that place
(``fvdesk render --objective neuron --position X,Y`` on the command line).  Arrow keys move the
selection, Home goes back to the centre (the default when no position is given).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QPoint, QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QKeyEvent, QMouseEvent, QPainter, QPaintEvent, QPalette, QPen
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QSizePolicy, QVBoxLayout, QWidget

from fvdesk.gui.article.combination import Submit


class PositionGrid(QWidget):
    """A clickable width x height grid with one selected cell."""

    position_changed = Signal(int, int)  # x, y
    x: int  # type: ignore[assignment]  # the selected cell; shadows QWidget.x, never called here
    y: int  # type: ignore[assignment]  # the selected cell; shadows QWidget.y, never called here

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("positionGrid")
        self.grid_w = self.grid_h = 1
        self.x = self.y = 0
        self.setFocusPolicy(Qt.FocusPolicy.StrongFocus)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(96, 96)

    def set_grid(self, width: int, height: int) -> None:
        self.grid_w, self.grid_h = max(1, int(width)), max(1, int(height))
        self.set_position(self.grid_w // 2, self.grid_h // 2)  # the engine's default: the centre

    def set_position(self, x: int, y: int) -> None:
        x = min(max(0, int(x)), self.grid_w - 1)
        y = min(max(0, int(y)), self.grid_h - 1)
        if (x, y) != (self.x, self.y):
            self.x, self.y = x, y
            self.position_changed.emit(x, y)
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(192, 192)

    def _cells(self) -> tuple[float, float, int, int]:
        side = min(self.width() / self.grid_w, self.height() / self.grid_h)
        ox = int((self.width() - side * self.grid_w) / 2)
        oy = int((self.height() - side * self.grid_h) / 2)
        return side, side, ox, oy

    def cell_at(self, p: QPoint) -> tuple[int, int] | None:
        cw, ch, ox, oy = self._cells()
        x, y = int((p.x() - ox) // cw), int((p.y() - oy) // ch)
        return (x, y) if 0 <= x < self.grid_w and 0 <= y < self.grid_h else None

    def cell_rect(self, x: int, y: int) -> QRect:
        cw, ch, ox, oy = self._cells()
        return QRect(int(ox + x * cw), int(oy + y * ch), max(1, int(cw)), max(1, int(ch)))

    def mousePressEvent(self, e: QMouseEvent) -> None:
        cell = self.cell_at(e.position().toPoint())
        if cell is not None:
            self.set_position(*cell)

    def keyPressEvent(self, e: QKeyEvent) -> None:
        moves = {Qt.Key.Key_Left: (-1, 0), Qt.Key.Key_Right: (1, 0),
                 Qt.Key.Key_Up: (0, -1), Qt.Key.Key_Down: (0, 1)}  # fmt: skip
        key = Qt.Key(e.key())
        if key in moves:
            dx, dy = moves[key]
            self.set_position(self.x + dx, self.y + dy)
        elif key == Qt.Key.Key_Home:
            self.set_position(self.grid_w // 2, self.grid_h // 2)
        else:
            super().keyPressEvent(e)

    def paintEvent(self, e: QPaintEvent) -> None:
        p = QPainter(self)
        pal = self.palette()
        grid = pal.color(QPalette.ColorRole.Mid)
        p.fillRect(self.cell_rect(0, 0).united(self.cell_rect(self.grid_w - 1, self.grid_h - 1)),
                   pal.color(QPalette.ColorRole.Base))  # fmt: skip
        if self.grid_w * self.grid_h <= 64 * 64:  # grid lines only where cells are visible
            p.setPen(QPen(grid, 1))
            for gx in range(self.grid_w):
                for gy in range(self.grid_h):
                    p.drawRect(self.cell_rect(gx, gy))
        sel = QColor(pal.color(QPalette.ColorRole.Highlight))
        p.fillRect(self.cell_rect(self.x, self.y), sel)
        p.end()


class NeuronPositionPicker(QWidget):
    """The grid of one layer, the chosen position, and Render Neuron / Add to Combination."""

    add_to_combination = Signal(str, int, int, int)  # layer, unit, x, y

    def __init__(self, submit: Submit, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("neuronPositionPicker")
        self._submit = submit
        self.layer, self.unit = "", 0
        self.title = QLabel("Choose a unit of a feature map")
        self.title.setWordWrap(True)
        self.grid = PositionGrid(self)
        self.where = QLabel("")
        self.grid.position_changed.connect(lambda *_: self._show_position())
        self.render_button = QPushButton("Render Neuron")
        self.render_button.clicked.connect(self.render)
        add = QPushButton("Add to Combination")
        add.clicked.connect(
            lambda: self.add_to_combination.emit(self.layer, self.unit, self.grid.x, self.grid.y)
        )
        self.add_button = add
        row = QHBoxLayout()
        row.addWidget(self.where, 1)
        row.addWidget(add)
        row.addWidget(self.render_button)
        col = QVBoxLayout(self)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self.title)
        col.addWidget(self.grid, 1)
        col.addLayout(row)
        self.set_unit("", 0, None)

    def set_unit(self, layer: str, unit: int, spatial: tuple[int, int] | None) -> None:
        """Show ``layer``'s grid (``spatial`` = (height, width); ``None``: not a feature map)."""
        self.layer, self.unit = layer, int(unit)
        ok = bool(layer) and spatial is not None
        for widget in (self.grid, self.render_button, self.add_button):
            widget.setEnabled(ok)
        if ok:
            h, w = spatial  # type: ignore[misc]  # ok says spatial is a pair
            self.grid.set_grid(w, h)
            self.title.setText(f"Neuron of {layer}:{unit} — click a position on its {w} × {h} grid")
        else:
            self.title.setText("Choose a unit of a feature map (vectors have no positions).")
        self._show_position()

    def position(self) -> tuple[int, int]:
        return self.grid.x, self.grid.y

    def spec(self) -> Any:
        from fvdesk.core.jobs.job import UnitJob

        x, y = self.position()
        return UnitJob(self.layer, (self.unit,), kind="neuron", x=x, y=y)

    def render(self) -> Any:  # type: ignore[override]  # a slot; QWidget.render (paint into a device) is never called here
        if not self.layer:
            return None
        spec = self.spec()
        return self._submit(spec)

    def _show_position(self) -> None:
        self.where.setText(f"x = {self.grid.x}, y = {self.grid.y}" if self.layer else "")
