"""The layer tree in Qt: one thin adapter over the core's ``LayerGraph.tree`` (never a copy).

Rows are addressed by integer ids, not Python pointers: a tree node's id is its position in a
pre-order walk; a unit row's id packs (layer node id + 1, unit).  Unit rows are lazy: a layer
reports children but exposes its units only when expanded, in chunks (``fetchMore``), so a
ResNet with 100k channels in total costs nothing until the user looks, and filtering never walks
units nobody opened.  The filter proxy matches names and op types against a precomputed set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from PySide6.QtCore import (
    QAbstractItemModel,
    QModelIndex,
    QPersistentModelIndex,
    QSortFilterProxyModel,
    Qt,
)
from PySide6.QtGui import QBrush, QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

from fvdesk.core.model.layers import format_shape
from fvdesk.gui.runtime.selection import RowRef

if TYPE_CHECKING:
    from fvdesk.core.model.layers import Layer, LayerGraph, TreeNode

_ROOT = QModelIndex()  # the invalid index, shared as a default argument
COLUMNS = ("Name", "Op type", "Output shape", "Channels")
HEADERS = ("Name", "Op", "Output", "Chan.")  # short: the dock is narrow; tooltips say more
UNIT_CHUNK = 256
_UNIT_SHIFT = 32
_UNIT_MASK = (1 << _UNIT_SHIFT) - 1

LayerRole = Qt.ItemDataRole.UserRole + 1  # layer name (str) for layer and unit rows
UnitRole = Qt.ItemDataRole.UserRole + 2  # unit index (int) for unit rows, else -1
RowKindRole = Qt.ItemDataRole.UserRole + 3  # "group" | "layer" | "unit"
SearchRole = Qt.ItemDataRole.UserRole + 4  # text the filter matches

Index = QModelIndex | QPersistentModelIndex


class LayerTreeModel(QAbstractItemModel):
    """Read-only ``QAbstractItemModel`` over a ``LayerGraph`` and the model's class labels."""

    def __init__(
        self, graph: LayerGraph | None = None, labels: list[str] | None = None, parent=None
    ) -> None:
        super().__init__(parent)
        self._nodes: list[TreeNode] = []
        self._parent: list[int] = []
        self._row: list[int] = []
        self._children: list[list[int]] = []
        self._top: list[int] = []  # node ids of the top-level rows
        self._fetched: dict[int, int] = {}
        self._ids: dict[int, int] = {}
        self.graph: LayerGraph | None = None
        self.labels: list[str] | None = None
        if graph is not None:
            self.set_graph(graph, labels)

    # -- content ------------------------------------------------------------------------------
    def set_graph(self, graph: LayerGraph | None, labels: list[str] | None = None) -> None:
        """Show another model's graph (``None`` empties the tree)."""
        self.beginResetModel()
        self.graph, self.labels = graph, labels
        self._nodes, self._parent, self._row, self._children = [], [], [], []
        self._top = []  # an emptied tree has no rows (a closed model's would point at nothing)
        self._fetched = {}
        self._ids = {}
        if graph is not None:
            self._index_tree(graph.tree)
        self.endResetModel()

    def set_labels(self, labels: list[str] | None) -> None:
        """New class labels (a labels file was chosen): repaint the unit rows only."""
        self.labels = labels
        for pid, count in self._fetched.items():
            if count:
                parent = self.createIndex(self._row[pid], 0, pid)
                first = self.index(0, 0, parent)
                last = self.index(count - 1, len(COLUMNS) - 1, parent)
                self.dataChanged.emit(first, last)

    def _index_tree(self, root: TreeNode) -> None:
        # Iterative pre-order walk: real graphs can be deep enough to hit Python's recursion limit.
        stack: list[tuple[TreeNode, int, int]] = [
            (child, -1, row) for row, child in enumerate(root.children)
        ]
        stack.reverse()
        top: list[int] = []
        while stack:
            node, parent, row = stack.pop()
            nid = len(self._nodes)
            self._nodes.append(node)
            self._parent.append(parent)
            self._row.append(row)
            self._children.append([])
            self._ids[id(node)] = nid
            if parent < 0:
                top.append(nid)
            else:
                self._children[parent].append(nid)
            for r in range(len(node.children) - 1, -1, -1):
                stack.append((node.children[r], nid, r))
        self._top = top

    def node_count(self) -> int:
        return len(self._nodes)

    def units_of(self, layer: Layer) -> int:
        if not layer.available:  # left out by a partial conversion: nothing to render
            return 0
        return max(int(layer.channels), 0)

    def unit_label(self, layer: Layer, unit: int) -> str | None:
        """The class name of a unit (the core's one rule, ``LayerGraph.unit_label``)."""
        if self.graph is None:
            return None
        return self.graph.unit_label(layer.name, unit, self.labels)

    # -- addressing ---------------------------------------------------------------------------
    def ref(self, index: Index) -> RowRef | None:
        """What ``index`` (of this model) stands for."""
        if not index.isValid():
            return None
        iid = int(index.internalId())
        if iid >> _UNIT_SHIFT:
            node = self._nodes[(iid >> _UNIT_SHIFT) - 1]
            return RowRef("unit", node.layer, iid & _UNIT_MASK, node)
        node = self._nodes[iid]
        return RowRef("layer" if node.layer is not None else "group", node.layer, -1, node)

    def index_of_layer(self, name: str) -> QModelIndex:
        for nid, node in enumerate(self._nodes):
            if node.layer is not None and node.layer.name == name:
                return self.createIndex(self._row[nid], 0, nid)
        return QModelIndex()

    def index_of_unit(self, name: str, unit: int) -> QModelIndex:
        """The unit's row, fetching units up to it first (so it can be selected)."""
        parent = self.index_of_layer(name)
        if not parent.isValid():
            return QModelIndex()
        nid = int(parent.internalId())
        layer = self._nodes[nid].layer
        if layer is None or not 0 <= unit < self.units_of(layer):
            return QModelIndex()
        while self._fetched.get(nid, 0) <= unit:
            self.fetchMore(parent)
        return self.createIndex(unit, 0, ((nid + 1) << _UNIT_SHIFT) | unit)

    # -- QAbstractItemModel -------------------------------------------------------------------
    def index(self, row: int, column: int, parent: Index = _ROOT) -> QModelIndex:
        if row < 0 or column < 0 or column >= len(COLUMNS):
            return QModelIndex()
        if not parent.isValid():
            if row < len(self._top):
                return self.createIndex(row, column, self._top[row])
            return QModelIndex()
        pid = int(parent.internalId())
        if pid >> _UNIT_SHIFT:
            return QModelIndex()
        kids = self._children[pid]
        if kids:
            return self.createIndex(row, column, kids[row]) if row < len(kids) else QModelIndex()
        if row < self._fetched.get(pid, 0):
            return self.createIndex(row, column, ((pid + 1) << _UNIT_SHIFT) | row)
        return QModelIndex()

    def parent(self, index: Index = _ROOT) -> QModelIndex:  # type: ignore[override]  # Qt's two parent() overloads in one
        if not index.isValid():
            return QModelIndex()
        iid = int(index.internalId())
        if iid >> _UNIT_SHIFT:
            nid = (iid >> _UNIT_SHIFT) - 1
            return self.createIndex(self._row[nid], 0, nid)
        pid = self._parent[iid]
        if pid < 0:
            return QModelIndex()
        return self.createIndex(self._row[pid], 0, pid)

    def rowCount(self, parent: Index = _ROOT) -> int:
        if parent.column() > 0:
            return 0
        if not parent.isValid():
            return len(self._top)
        pid = int(parent.internalId())
        if pid >> _UNIT_SHIFT:
            return 0
        kids = self._children[pid]
        return len(kids) if kids else self._fetched.get(pid, 0)

    def columnCount(self, parent: Index = _ROOT) -> int:
        return len(COLUMNS)

    def hasChildren(self, parent: Index = _ROOT) -> bool:
        if not parent.isValid():
            return bool(self._top)
        if parent.column() > 0:
            return False
        pid = int(parent.internalId())
        if pid >> _UNIT_SHIFT:
            return False
        node = self._nodes[pid]
        if self._children[pid]:
            return True
        return node.layer is not None and self.units_of(node.layer) > 0

    def canFetchMore(self, parent: Index) -> bool:
        if not parent.isValid():
            return False
        pid = int(parent.internalId())
        if pid >> _UNIT_SHIFT or self._children[pid]:
            return False
        layer = self._nodes[pid].layer
        return layer is not None and self._fetched.get(pid, 0) < self.units_of(layer)

    def fetchMore(self, parent: Index) -> None:
        if not self.canFetchMore(parent):
            return
        pid = int(parent.internalId())
        layer = self._nodes[pid].layer
        assert layer is not None
        have = self._fetched.get(pid, 0)
        more = min(UNIT_CHUNK, self.units_of(layer) - have)
        first = self.createIndex(self._row[pid], 0, pid)
        self.beginInsertRows(first, have, have + more - 1)
        self._fetched[pid] = have + more
        self.endInsertRows()

    def headerData(
        self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return HEADERS[section]
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.ToolTipRole:
            return COLUMNS[section]
        return None

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        ref = self.ref(index)
        if ref is not None and ref.layer is not None and not ref.layer.available:
            # Greyed by the view and not selectable: the conversion stopped before this node.
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        ref = self.ref(index)
        if ref is None:
            return None
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return self._display(ref, col)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(ref)
        if role == LayerRole:
            return ref.layer.name if ref.layer is not None else None
        if role == UnitRole:
            return ref.unit
        if role == RowKindRole:
            return ref.kind
        if role == SearchRole:
            return self._search_text(ref)
        if role == Qt.ItemDataRole.TextAlignmentRole and col == 3:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and col > 0:
            return QBrush(
                QApplication.palette().color(
                    QPalette.ColorGroup.Active, QPalette.ColorRole.PlaceholderText
                )
            )
        if (
            role == Qt.ItemDataRole.FontRole
            and ref.kind == "layer"
            and self.graph is not None
            and ref.layer is not None
            and ref.layer.name == self.graph.logits_name
        ):
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ForegroundRole and ref.kind == "group":
            return QBrush(QColor(120, 120, 120))
        return None

    def _display(self, ref: RowRef, col: int) -> str | None:
        if ref.kind == "unit":
            assert ref.layer is not None
            if col == 0:
                label = self.unit_label(ref.layer, ref.unit)
                return f"{ref.unit}: {label}" if label else f"unit {ref.unit}"
            return None  # the op column would only repeat "channel" a thousand times
        node = ref.node
        assert node is not None
        if col == 0:
            return node.label
        if ref.layer is None:
            if col == 1:
                n = sum(1 for n in node.walk() if n.layer is not None)
                return f"{n} layer{'s' if n != 1 else ''}"
            return None
        if col == 1:
            return ref.layer.op
        if col == 2:
            return format_shape(ref.layer.shape) or "?"
        if col == 3:
            return str(ref.layer.channels) if ref.layer.channels else "?"
        return None

    def _tooltip(self, ref: RowRef) -> str:
        if ref.layer is None:
            assert ref.node is not None
            return ref.node.path
        if ref.kind == "unit":
            label = self.unit_label(ref.layer, ref.unit)
            extra = f" — {label}" if label else ""
            return (
                f"{ref.layer.name}:{ref.unit}{extra}\nDouble-click to render; right-click for more."
            )
        layer = ref.layer
        if not layer.available:
            return (
                f"{layer.name}\n{layer.op}: not converted to torch ({layer.reason}).\n"
                "Only the layers before the node where the conversion stopped can be rendered."
            )
        logits = (
            " (logits)" if self.graph is not None and self.graph.logits_name == layer.name else ""
        )
        kind = {"tokens": "token layer", "attention": "attention tensor"}.get(
            layer.kind, f"{layer.kind} layer"
        )
        return (
            f"{layer.name}{logits}\n{layer.op}, output {format_shape(layer.shape, batch=True)}: "
            f"{layer.describe()}, {kind}\nRight-click to render its {layer.unit_noun}s."
        )

    def _search_text(self, ref: RowRef) -> str:
        if ref.kind == "unit":
            assert ref.layer is not None
            return (
                f"{ref.layer.name}:{ref.unit} {self.unit_label(ref.layer, ref.unit) or ''}".lower()
            )
        assert ref.node is not None
        if ref.layer is None:
            return f"{ref.node.path} {ref.node.label}".lower()
        return f"{ref.layer.name} {ref.node.label} {ref.layer.op}".lower()


class LayerFilterProxy(QSortFilterProxyModel):
    """Filters by layer name or op type; parents of matches stay (recursive filtering), and the
    children of a matching row stay too so a matched layer can still be expanded to its units.
    """

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._needle = ""
        self.setRecursiveFilteringEnabled(True)
        self.setAutoAcceptChildRows(True)
        self.setFilterCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        self.setDynamicSortFilter(False)

    def needle(self) -> str:
        return self._needle

    def set_needle(self, text: str) -> None:
        text = text.strip().lower()
        if text == self._needle:
            return
        if hasattr(self, "endFilterChange"):  # Qt >= 6.10
            self.beginFilterChange()
            self._needle = text
            self.endFilterChange(QSortFilterProxyModel.Direction.Rows)
        else:  # pragma: no cover - older Qt
            self._needle = text
            self.invalidateRowsFilter()

    def filterAcceptsRow(self, source_row: int, source_parent: Index) -> bool:
        if not self._needle:
            return True
        src = self.sourceModel()
        idx = src.index(source_row, 0, source_parent)
        text = src.data(idx, SearchRole)
        return bool(text) and self._needle in text
