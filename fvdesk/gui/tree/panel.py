"""The layer tree panel: a filter box, the lazy layer tree and a line about the selection.

A widget that only displays and reports: it shows a ``LayerGraph`` through ``LayerTreeModel``
and says what the user did (``unit_activated`` on double-click or Enter on a unit,
``render_requested`` on Enter, ``menu_requested`` on right-click); the window decides what that
means.  It never fetches a layer's units unless the user opens that layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QLabel,
    QLineEdit,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from fvdesk.core.model.layers import format_shape
from fvdesk.gui.tree.model import LayerFilterProxy, LayerTreeModel, RowRef


class LayerTreePanel(QWidget):
    """Filter, tree and selection info of the open model's layers."""

    unit_activated = Signal(str, int)  # layer, unit
    render_requested = Signal()  # Enter: render the selection
    menu_requested = Signal(object, QPoint)  # RowRef, global position
    selection_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.tree_model = LayerTreeModel(parent=self)
        self.tree_proxy = LayerFilterProxy(self)
        self.tree_proxy.setSourceModel(self.tree_model)
        self.filter_edit = QLineEdit()
        self.filter_edit.setObjectName("layerFilter")
        self.filter_edit.setPlaceholderText("Filter layers by name or op type (Ctrl+F)")
        self.filter_edit.setClearButtonEnabled(True)
        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(150)
        self._filter_timer.timeout.connect(self.apply_filter)
        self.filter_edit.textChanged.connect(lambda _t: self._filter_timer.start())
        self.filter_edit.returnPressed.connect(self.apply_filter)

        tree = QTreeView()
        tree.setObjectName("layerTree")
        tree.setModel(self.tree_proxy)
        tree.setUniformRowHeights(True)
        tree.setExpandsOnDoubleClick(False)
        tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        tree.setAlternatingRowColors(True)
        tree.setAllColumnsShowFocus(True)
        tree.customContextMenuRequested.connect(self._on_menu)
        tree.doubleClicked.connect(self._on_double_click)
        tree.selectionModel().selectionChanged.connect(lambda *_: self._on_selection())
        header = tree.header()
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(36)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
        fm = tree.fontMetrics()
        tree.setIndentation(fm.horizontalAdvance("MM"))
        header.resizeSection(1, fm.horizontalAdvance("MaxPool") + 14)
        header.resizeSection(2, fm.horizontalAdvance("64×112×112") + 10)
        header.resizeSection(3, fm.horizontalAdvance("Chan.") + 12)
        for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):  # Enter renders, like a double-click
            QShortcut(
                QKeySequence(key),
                tree,
                self.render_requested.emit,
                context=Qt.ShortcutContext.WidgetShortcut,
            )
        self.tree = tree

        self.layer_info = QLabel()
        self.layer_info.setObjectName("layerInfo")
        self.layer_info.setWordWrap(True)
        self.layer_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layer_info.setMinimumHeight(40)

        v = QVBoxLayout(self)
        v.setContentsMargins(4, 4, 4, 4)
        v.addWidget(self.filter_edit)
        v.addWidget(tree, 1)
        v.addWidget(self.layer_info)

    # -- content ------------------------------------------------------------------------------
    def set_graph(self, graph: Any, labels: list[str] | None = None) -> None:
        self.tree_model.set_graph(graph, labels)
        self.layer_info.setText("")
        if graph is not None:
            self.expand_default()

    def set_labels(self, labels: list[str] | None) -> None:
        self.tree_model.set_labels(labels)
        self._on_selection()

    # -- filtering and expanding --------------------------------------------------------------
    def apply_filter(self) -> None:
        self._filter_timer.stop()
        text = self.filter_edit.text()
        self.tree_proxy.set_needle(text)
        if text.strip():
            self._expand(depth=None)
        else:
            self.expand_default()

    def expand_default(self) -> None:
        """Open the groups of the first levels so a fresh model shows its structure."""
        self.tree.collapseAll()
        self._expand(depth=2 if self.tree_model.node_count() <= 200 else 0)

    def _expand(self, depth: int | None, limit: int = 5000) -> None:
        """Open groups down to ``depth`` (None: every group that survived the filter, so the
        matches show), never a layer's units: expanding those would fetch them."""
        stack, seen = [(QModelIndex(), 0)], 0
        while stack and seen < limit:
            parent, level = stack.pop()
            for r in range(self.tree_proxy.rowCount(parent)):
                idx = self.tree_proxy.index(r, 0, parent)
                ref = self.ref_at(idx)
                seen += 1
                if ref is not None and ref.kind == "group":
                    self.tree.expand(idx)
                    if depth is None or level < depth:
                        stack.append((idx, level + 1))

    def focus_filter(self) -> None:
        self.filter_edit.setFocus()
        self.filter_edit.selectAll()

    # -- selection ----------------------------------------------------------------------------
    def ref_at(self, proxy_index: QModelIndex) -> RowRef | None:
        return self.tree_model.ref(self.tree_proxy.mapToSource(proxy_index))

    def selected_refs(self) -> list[RowRef]:
        rows = self.tree.selectionModel().selectedRows(0)
        refs = [self.ref_at(i) for i in rows]
        if not refs and self.tree.currentIndex().isValid():
            refs = [self.ref_at(self.tree.currentIndex())]
        return [r for r in refs if r is not None]

    def selected_layers(self) -> list[str]:
        """Names of the layers selected (a selected unit selects its layer), in tree order."""
        return list(dict.fromkeys(r.layer.name for r in self.selected_refs() if r.layer))

    def select(self, layer: str, unit: int = -1) -> None:
        """Show and select a layer (or one of its units), clearing a filter that hides it."""
        model = self.tree_model
        src = model.index_of_unit(layer, unit) if unit >= 0 else model.index_of_layer(layer)
        if not src.isValid():
            return
        if self.filter_edit.text():
            self.filter_edit.clear()
            self.apply_filter()
        idx = self.tree_proxy.mapFromSource(src)
        self.tree.scrollTo(idx)
        self.tree.setCurrentIndex(idx)

    def select_units(self, layer: str, units: Sequence[int]) -> None:
        """Select several units of ``layer`` at once, as ctrl-clicks would (the last current)."""
        rows = []
        for unit in units:
            self.select(layer, unit)
            rows.append(self.tree.currentIndex())
        flag = QItemSelectionModel.SelectionFlag
        self.tree.selectionModel().clearSelection()
        for index in rows:
            self.tree.selectionModel().select(index, flag.Select | flag.Rows)

    def _on_double_click(self, index: QModelIndex) -> None:
        ref = self.ref_at(index)
        if ref is None:
            return
        if ref.kind == "unit":
            self.unit_activated.emit(ref.layer.name, ref.unit)  # type: ignore[union-attr]  # a unit's ref always has its layer
        else:
            col0 = index.siblingAtColumn(0)
            self.tree.setExpanded(col0, not self.tree.isExpanded(col0))

    def _on_menu(self, pos: QPoint) -> None:
        index = self.tree.indexAt(pos)
        ref = self.ref_at(index) if index.isValid() else None
        if ref is not None and ref.layer is not None:
            self.menu_requested.emit(ref, self.tree.viewport().mapToGlobal(pos))

    def _on_selection(self) -> None:
        refs = self.selected_refs()
        self.selection_changed.emit()
        if not refs or refs[0].layer is None:
            self.layer_info.setText(f"{len(refs)} selected" if len(refs) > 1 else "")
            return
        layer = refs[0].layer
        graph = self.tree_model.graph
        is_logits = graph is not None and graph.logits_name == layer.name
        logits = " · <b>logits</b>" if is_logits else ""
        units = f"{layer.channels} {'classes' if is_logits else 'units'}"
        extra = ""
        if refs[0].kind == "unit":
            label = self.tree_model.unit_label(layer, refs[0].unit)
            extra = f"<br>unit {refs[0].unit}" + (f": <b>{label}</b>" if label else "")
        shape = format_shape(layer.shape)
        self.layer_info.setText(
            f"<b>{layer.name}</b><br>{layer.op} · {shape} · {layer.kind} · {units}{logits}{extra}"
        )
