"""The central canvas: a header (tile counts, tile size), the pending-combination bar and the
tile view.  Display only; the window wires it to the job controller.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QToolButton, QVBoxLayout, QWidget

from fvdesk.gui.qt_tile_view import TileView
from fvdesk.gui.qt_tiles import DEFAULT_TILE, MAX_TILE, MIN_TILE, TileModel


class CanvasPanel(QWidget):
    """Tile counts and size, the combination being built, and the tiles."""

    def __init__(
        self, tiles: TileModel, render_combination: QAction, clear_combination: QAction
    ) -> None:
        super().__init__()
        self.tiles = tiles
        self.tile_view = TileView(tiles)

        self.combo_bar = QWidget()
        self.combo_bar.setObjectName("combinationBar")
        cb = QHBoxLayout(self.combo_bar)
        cb.setContentsMargins(6, 2, 6, 2)
        self.combo_label = QLabel()
        self.combo_label.setObjectName("combinationLabel")
        cb.addWidget(QLabel("<b>Combination:</b>"))
        cb.addWidget(self.combo_label, 1)
        for action in (render_combination, clear_combination):
            button = QToolButton()
            button.setDefaultAction(action)
            cb.addWidget(button)
        self.combo_bar.setVisible(False)

        header = QWidget()
        hl = QHBoxLayout(header)
        hl.setContentsMargins(6, 2, 6, 2)
        self.counts_label = QLabel()
        self.counts_label.setObjectName("tileCounts")
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setObjectName("tileSizeSlider")
        self.size_slider.setRange(MIN_TILE, MAX_TILE)
        self.size_slider.setValue(DEFAULT_TILE)
        self.size_slider.setFixedWidth(160)
        self.size_slider.setToolTip("Tile size (Ctrl+wheel over the tiles)")
        self.size_slider.valueChanged.connect(self.tile_view.set_tile_size)
        self.tile_view.tile_size_changed.connect(self._on_tile_size)
        hl.addWidget(self.counts_label, 1)
        hl.addWidget(QLabel("Tile size"))
        hl.addWidget(self.size_slider)

        v = QVBoxLayout(self)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(0)
        v.addWidget(header)
        v.addWidget(self.combo_bar)
        v.addWidget(self.tile_view, 1)
        tiles.tiles_changed.connect(self.show_counts)
        self.show_counts()

    def _on_tile_size(self, px: int) -> None:
        if self.size_slider.value() != px:
            self.size_slider.setValue(px)

    def scale_tiles(self, factor: float) -> None:
        self.size_slider.setValue(round(self.size_slider.value() * factor))

    def show_counts(self) -> None:
        c = self.tiles.counts()
        total = sum(c.values())
        if not total:
            self.counts_label.setText("No tiles")
            return
        parts = [f"{total} tile{'s' if total != 1 else ''}"]
        parts += [f"{n} {state}" for state, n in c.items() if n]
        self.counts_label.setText(" · ".join(parts))

    def show_combination(self, text: str, tooltip: str) -> None:
        """The pending combination (the bar hides when there is none)."""
        self.combo_bar.setVisible(bool(text))
        self.combo_label.setText(text)
        self.combo_label.setToolTip(tooltip)

    def set_empty_text(self, text: str) -> None:
        self.tile_view.empty_text = text
        self.tile_view.viewport().update()
