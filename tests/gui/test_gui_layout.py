"""The default window layout gives the layer tree the room: at 1600×1000 the Combination and
Neuron Position panels (tabbed together) sit below the tree at their smallest, and the tree's
viewport shows at least 30 rows."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")
pytest.importorskip("pytestqt")

MIN_ROWS = 30


def test_the_layer_tree_gets_most_of_the_left_column(qtbot, isolated, demo_model) -> None:
    from fvdesk.gui.shell.main_window import MainWindow

    w = MainWindow()
    qtbot.addWidget(w)
    try:
        w.resize(1600, 1000)
        w.show()
        qtbot.waitExposed(w)
        w.session.set_model(demo_model)
        tree = w.layers.tree
        qtbot.waitUntil(lambda: tree.model().rowCount() > 0, timeout=10_000)
        row = tree.sizeHintForRow(0)
        assert row > 0
        rows = tree.viewport().height() / row
        assert rows >= MIN_ROWS, f"the tree shows {rows:.1f} rows of {row} px"
        # the article's panels are still one click away, tabbed below the tree
        assert w.tree_dock.height() > 2 * w.combination_dock.height()
        assert w.combination_dock.isVisible()
        assert w.tabifiedDockWidgets(w.combination_dock) == [w.position_dock]
    finally:
        w.shutdown(timeout_ms=20_000)
