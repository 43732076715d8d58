"""The window's layout: the toolbar, the canvas in the middle, every dock and the default
arrangement (``Reset Layout`` goes back to it).

The layer tree gets the left column: the Combination and Neuron Position panels are tabbed
together below it at their smallest (``tests/gui/test_gui_layout.py``: at least 30 rows of the tree
show at 1600×1000).  Render Settings, Dataset Examples and Inspect Image share the right column as tabs; the
Messages strip runs along the bottom, and the layer browser joins it when first used.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QPlainTextEdit, QToolBar

from fvdesk.gui.canvas.panel import CanvasPanel
from fvdesk.gui.shell import wiring
from fvdesk.gui.shell.actions import ACTIONS
from fvdesk.gui.tree.panel import LayerTreePanel

EMPTY_CANVAS = (
    "Double-click a unit in the layer tree to render it.\n"
    "Right-click a layer to render its first units, all of them, or DeepDream.\n"
    "Drop an .onnx file here to open another model."
)

_H, _V = Qt.Orientation.Horizontal, Qt.Orientation.Vertical


def build(w: Any) -> None:
    """Toolbar, canvas and docks of the main window ``w`` (set as its attributes)."""
    w.toolbar = QToolBar("Main", w)
    w.toolbar.setObjectName("mainToolBar")
    w.toolbar.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
    w.toolbar.setMovable(False)
    for spec in ACTIONS:
        if spec.toolbar:
            w.toolbar.addAction(w.actions_by_key[spec.key])
    w.addToolBar(Qt.ToolBarArea.TopToolBarArea, w.toolbar)
    w.canvas = CanvasPanel(w.tiles)
    w.tile_view = w.canvas.tile_view
    w.canvas.set_empty_text(EMPTY_CANVAS)
    w.setCentralWidget(w.canvas)
    w.layers = LayerTreePanel()
    w.tree_dock = w.add_dock("Layers", "layersDock", w.layers, "left")
    w.settings_dock = w.add_dock("Render Settings", "settingsDock", w.settings_panel, "right")
    w.log_view = QPlainTextEdit()
    w.log_view.setObjectName("messages")
    w.log_view.setReadOnly(True)
    w.log_view.setMaximumBlockCount(2000)
    w.log_view.setPlaceholderText("Messages from loading and rendering appear here.")
    w.log_dock = w.add_dock("Messages", "messagesDock", w.log_view, "bottom")
    wiring.add_docks(w)  # examples_dock, browser_dock, combination_dock, position_dock
    d = w.docks
    # the tree takes what the article's panels leave (their minimum height)
    d.default_sizes = [([w.tree_dock, w.settings_dock], [400, 320], _H),
                       ([w.tree_dock, w.combination_dock], [700, 100], _V),
                       ([w.log_dock], [110], _V)]  # fmt: skip
    d.default_tabs = [(w.settings_dock, w.examples_dock), (w.settings_dock, w.inspect_dock),
                      (w.combination_dock, w.position_dock)]  # fmt: skip
    d.lazy[w.browser_dock] = w.log_dock  # beside the messages when a layer is browsed
