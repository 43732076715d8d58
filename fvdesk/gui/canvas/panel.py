"""The central canvas: a header (tile counts, tile size) and the tile view.  Display only; the
window wires it to the job controller (the pending combination has a dock of its own).
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSlider, QVBoxLayout, QWidget

from fvdesk.gui.canvas.tile_view import TileView
from fvdesk.gui.canvas.tiles import DEFAULT_TILE, MAX_TILE, MIN_TILE, TileModel


class CanvasPanel(QWidget):
    """Tile counts and size, and the tiles."""

    def __init__(self, tiles: TileModel) -> None:
        super().__init__()
        self.tiles = tiles
        self.tile_view = TileView(tiles)

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

    def set_empty_text(self, text: str) -> None:
        self.tile_view.empty_text = text
        self.tile_view.viewport().update()
