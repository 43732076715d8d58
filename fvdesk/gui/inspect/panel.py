"""The Inspect Image dock: the image, what the model predicts, and the views about it.

The panel only asks the ``InspectController`` for views and shows what arrives: the prediction
(top-5), the layer's channel maps sorted by their spatial maximum (a bar chart for a vector
layer; a click shows the map over the image), the image's top units with their heat maps and
renders, the attribution heat map with the units ranked by contribution, the neuron groups and
the activation grid.  Accentuation and inversion render as tiles on the canvas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QSpinBox,
    QStackedWidget,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from fvdesk.core.inspect.layers import default_layer, inspectable_layers
from fvdesk.core.inspect.results import (
    ActivationGrid,
    Attribution,
    LayerActivations,
    NeuronGroups,
    Prediction,
)
from fvdesk.gui.inspect.widgets import BarChart, GridView, ImageView, map_icon, pixmap_of

ICON = QSize(64, 64)
UNIT_ROLE = Qt.ItemDataRole.UserRole


def _units_tree(headers: list[str]) -> QTreeWidget:
    t = QTreeWidget()
    t.setHeaderLabels(headers)
    t.setIconSize(ICON)
    t.setRootIsDecorated(False)
    t.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
    return t


def _spin(low: int, high: int, value: int) -> QSpinBox:
    s = QSpinBox()
    s.setRange(low, high)
    s.setValue(value)
    return s


class InspectPanel(QWidget):
    """The inspector's dock (module docstring); ``controller`` is its ``InspectController``."""

    examples_requested = Signal(str, int)  # layer, unit: show the unit's dataset examples
    open_requested = Signal()  # the Open Image… button

    def __init__(self, controller: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.ctl = controller
        self.activations: LayerActivations | None = None
        self.attribution: Attribution | None = None
        self.neuron_groups: NeuronGroups | None = None
        self.activation_grid: ActivationGrid | None = None
        self.prediction: Prediction | None = None
        self._build()
        c = controller
        c.image_opened.connect(self._on_image)
        c.image_cleared.connect(self._clear)
        c.found.connect(self._on_found)
        c.rendered.connect(self._on_rendered)
        c.session.changed.connect(self._on_model)
        self._on_model(c.session.model)

    # -- layout ---------------------------------------------------------------------------------
    def _build(self) -> None:
        self.open_button = QPushButton("Open Image…")
        self.open_button.clicked.connect(self.open_requested)
        self.image_view = ImageView()
        self.predictions = QListWidget()
        self.predictions.setMaximumHeight(110)
        self.layer_box = QComboBox()
        self.layer_box.setObjectName("inspectLayer")
        self.top_spin = _spin(1, 64, 9)
        self.show_button = QPushButton("Show")
        self.show_button.setToolTip("The layer's activations on the image and its top units.")
        self.show_button.clicked.connect(self.inspect_current)
        self.layer_box.activated.connect(lambda _i: self.inspect_current())
        row = QHBoxLayout()
        for w in (QLabel("Layer"), self.layer_box, QLabel("Top"), self.top_spin, self.show_button):
            row.addWidget(w)
        row.setStretch(1, 1)
        self.tabs = QTabWidget()
        self.tabs.addTab(self._channels_tab(), "Channels")
        self.tabs.addTab(self._top_tab(), "Top Units")
        self.tabs.addTab(self._attribution_tab(), "Attribution")
        self.tabs.addTab(self._groups_tab(), "Groups")
        self.tabs.addTab(self._grid_tab(), "Grid")
        self.tabs.addTab(self._render_tab(), "From the Image")
        lay = QVBoxLayout(self)
        lay.addWidget(self.open_button)
        lay.addWidget(self.image_view, 3)
        lay.addWidget(self.predictions)
        lay.addLayout(row)
        lay.addWidget(self.tabs, 4)

    def _channels_tab(self) -> QWidget:
        self.channel_list = QListWidget()
        self.channel_list.setViewMode(QListWidget.ViewMode.IconMode)
        self.channel_list.setIconSize(QSize(48, 48))
        self.channel_list.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.channel_list.currentItemChanged.connect(lambda item, _p: self._show_channel(item))
        self.bars = BarChart()
        self.channel_stack = QStackedWidget()
        self.channel_stack.addWidget(self.channel_list)
        self.channel_stack.addWidget(self.bars)
        return self.channel_stack

    def _top_tab(self) -> QWidget:
        self.top_units = _units_tree(["Heat map", "Render", "Unit", "Value", "Label"])
        self.top_units.currentItemChanged.connect(lambda item, _p: self._show_unit(item))
        self.top_units.customContextMenuRequested.connect(self._top_menu)
        return self.top_units

    def _attribution_tab(self) -> QWidget:
        w = QWidget()
        form = QFormLayout(w)
        self.target_box = QComboBox()
        self.target_box.setEditable(True)
        self.target_box.setToolTip(
            "top, a class index (7 or class:7), or LAYER:UNIT of a later layer"
        )
        self.ig_box = QCheckBox("Integrated gradients")
        self.ig_steps = _spin(2, 512, 32)
        self.attribute_button = QPushButton("Attribute to the Layer")
        self.attribute_button.clicked.connect(self.attribute_current)
        self.channel_attr = _units_tree(["Render", "Unit", "Contribution", "Label"])
        self.channel_attr.currentItemChanged.connect(lambda item, _p: self._show_unit(item))
        form.addRow("Target", self.target_box)
        form.addRow(self.ig_box, self.ig_steps)
        form.addRow(self.attribute_button)
        form.addRow(self.channel_attr)
        return w

    def _groups_tab(self) -> QWidget:
        w = QWidget()
        form = QFormLayout(w)
        self.groups_spin = _spin(1, 32, 6)
        self.groups_button = QPushButton("Factor into Groups")
        self.groups_button.clicked.connect(
            lambda: self.ctl.groups(self.layer(), self.groups_spin.value())
        )
        self.group_list = _units_tree(["Map", "Render", "Group", "Share"])
        self.group_list.currentItemChanged.connect(lambda item, _p: self._show_group(item))
        self.groups_error = QLabel()
        form.addRow("Groups", self.groups_spin)
        form.addRow(self.groups_button)
        form.addRow(self.groups_error)
        form.addRow(self.group_list)
        return w

    def _grid_tab(self) -> QWidget:
        w = QWidget()
        form = QFormLayout(w)
        self.grid_threshold = QDoubleSpinBox()
        self.grid_threshold.setRange(0.0, 1.0)
        self.grid_threshold.setSingleStep(0.05)
        self.grid_threshold.setValue(0.1)
        self.grid_threshold.setToolTip("Cells whose vector is below this share of the largest "
                                       "norm are left blank.")  # fmt: skip
        self.grid_button = QPushButton("Render the Activation Grid")
        self.grid_button.clicked.connect(
            lambda: self.ctl.grid(self.layer(), self.grid_threshold.value())
        )
        self.grid_view = GridView()
        self.grid_view.describe = self._describe_cell
        form.addRow("Blank below", self.grid_threshold)
        form.addRow(self.grid_button)
        form.addRow(self.grid_view)
        return w

    def _render_tab(self) -> QWidget:
        w = QWidget()
        form = QFormLayout(w)
        self.accent_unit = _spin(0, 1_000_000, 0)
        self.near_box = QComboBox()
        self.near_weight = QDoubleSpinBox()
        self.near_weight.setRange(0.0, 100.0)
        self.near_weight.setValue(1.0)
        self.accent_button = QPushButton("Accentuate the Unit")
        self.accent_button.clicked.connect(self.accentuate_current)
        self.invert_button = QPushButton("Invert the Layer")
        self.invert_button.clicked.connect(lambda: self.ctl.invert(self.layer()))
        self.caricature_button = QPushButton("Caricature")
        self.caricature_button.clicked.connect(
            lambda: self.ctl.invert(self.layer(), caricature=True)
        )
        form.addRow("Unit", self.accent_unit)
        form.addRow("Stay close in", self.near_box)
        form.addRow("Penalty weight", self.near_weight)
        form.addRow(self.accent_button)
        form.addRow(self.invert_button)
        form.addRow(self.caricature_button)
        return w

    # -- requests -------------------------------------------------------------------------------
    def layer(self) -> str:
        return self.layer_box.currentText()

    def inspect_current(self) -> None:
        if self.layer():
            self.ctl.inspect_layer(self.layer(), self.top_spin.value())

    def attribute_current(self) -> None:
        target = self.target_box.currentText().strip() or "top"
        target = target.split(" ", 1)[0]  # "class:7 (label)" -> "class:7"
        self.ctl.attribute(self.layer(), target, integrated=self.ig_box.isChecked(),
                           steps=self.ig_steps.value())  # fmt: skip

    def accentuate_current(self) -> None:
        near = self.near_box.currentData()
        self.ctl.accentuate(self.layer(), [self.accent_unit.value()], penalty_layer=near,
                            weight=self.near_weight.value())  # fmt: skip

    def _top_menu(self, pos: Any) -> None:
        item = self.top_units.itemAt(pos)
        if item is None or self.activations is None:
            return
        unit, layer = int(item.data(0, UNIT_ROLE)), self.activations.layer
        menu = QMenu(self)
        menu.addAction("Accentuate in the Image", lambda: self.ctl.accentuate(layer, [unit]))
        menu.addAction("Render Larger", lambda: self.ctl.jobs.render_units(layer, [unit]))
        menu.addAction("Dataset Examples", lambda: self.examples_requested.emit(layer, unit))
        menu.popup(self.top_units.viewport().mapToGlobal(pos))

    # -- what arrives ---------------------------------------------------------------------------
    def _on_model(self, model: Any) -> None:
        self.layer_box.clear()
        self.near_box.clear()
        self.near_box.addItem("pixels", None)
        if model is not None:
            names = inspectable_layers(model.graph)
            self.layer_box.addItems(names)
            for n in names:
                self.near_box.addItem(n, n)
            first = default_layer(model.graph)
            if first:
                self.layer_box.setCurrentText(first)
        self._clear()

    def _clear(self) -> None:
        self.activations = self.attribution = self.neuron_groups = None
        self.activation_grid = self.prediction = None
        self.image_view.set_image(None)
        for w in (self.predictions, self.channel_list):
            w.clear()
        for t in (self.top_units, self.channel_attr, self.group_list):
            t.clear()
        self.grid_view.set_grid(None, None)
        self.groups_error.setText("")

    def _on_image(self, img: Any) -> None:
        self._clear()
        self.image_view.set_image(img.pixels, img.name)
        self.inspect_current()

    def _on_found(self, role: str, data: Any) -> None:
        if isinstance(data, Prediction):
            self._show_prediction(data)
        elif isinstance(data, LayerActivations):
            self._show_activations(data)
        elif isinstance(data, Attribution):
            self._show_attribution(data)
        elif isinstance(data, NeuronGroups):
            self._show_groups(data)
        elif isinstance(data, ActivationGrid):
            self.activation_grid = data
            self.grid_view.set_grid(self._pixels(), data)

    def _pixels(self) -> np.ndarray | None:
        return self.ctl.image.pixels if self.ctl.image is not None else None

    def _show_prediction(self, pred: Prediction) -> None:
        self.prediction = pred
        self.predictions.clear()
        self.target_box.clear()
        self.target_box.addItem("top")
        for c in pred.classes:
            name = c.label or f"class {c.index}"
            self.predictions.addItem(f"{name}  {100 * c.probability:.1f} %  (logit {c.logit:.3g})")
            self.target_box.addItem(f"class:{c.index} ({name})")

    def _show_activations(self, acts: LayerActivations) -> None:
        self.activations = acts
        self.channel_list.clear()
        self.top_units.clear()
        if acts.maps is None:
            self.bars.set_values(acts.values, acts.order, acts.labels)
            self.channel_stack.setCurrentWidget(self.bars)
        else:
            self.channel_stack.setCurrentWidget(self.channel_list)
            for u in acts.order:
                item = QListWidgetItem(map_icon(acts.maps[int(u)]), str(int(u)))
                item.setData(UNIT_ROLE, int(u))
                item.setToolTip(f"unit {int(u)}: max {float(acts.values[u]):.4g}")
                self.channel_list.addItem(item)
        pixels = self._pixels()
        for t in acts.top(self.top_spin.value()):
            row = QTreeWidgetItem(["", "", str(t.unit), f"{t.value:.4g}", t.label or ""])
            row.setData(0, UNIT_ROLE, t.unit)
            if pixels is not None:
                row.setIcon(0, map_icon(t.heatmap, pixels))
            self.top_units.addTopLevelItem(row)

    def _show_attribution(self, att: Attribution) -> None:
        self.attribution = att
        self.image_view.show_heat(att.heatmap, f"attribution of {att.target} to {att.to_layer}")
        self.channel_attr.clear()
        for unit, value in att.top(self.top_spin.value()):
            item = QTreeWidgetItem(["", str(unit), f"{value:.4g}", ""])
            item.setData(0, UNIT_ROLE, unit)
            self.channel_attr.addTopLevelItem(item)

    def _show_groups(self, groups: NeuronGroups) -> None:
        self.neuron_groups = groups
        self.group_list.clear()
        total = float(groups.maps.sum()) or 1.0
        pixels = self._pixels()
        for g in range(groups.k):
            share = float(groups.maps[g].sum()) / total
            item = QTreeWidgetItem(["", "", f"{g + 1}/{groups.k}", f"{100 * share:.0f} %"])
            item.setData(0, UNIT_ROLE, g)
            if pixels is not None:
                item.setIcon(0, map_icon(groups.heatmap(g), pixels))
            self.group_list.addTopLevelItem(item)
        self.groups_error.setText(
            f"Reconstruction error {100 * groups.error:.1f} % of the activations."
        )

    def _on_rendered(self, role: str, result: Any) -> None:
        icon = QIcon(pixmap_of(result.image))
        if role == "top":
            self._set_icon(self.top_units, result.unit, 1, icon)
        elif role == "channels":
            self._set_icon(self.channel_attr, result.unit, 0, icon)
        elif role == "groups" and result.kind == "group":
            self._set_icon(self.group_list, result.facet, 1, icon)
        elif role == "grid" and self.activation_grid is not None:
            w = self.activation_grid.shape[1]
            self.grid_view.set_render(result.slot % w, result.slot // w, result.image)

    @staticmethod
    def _set_icon(tree: QTreeWidget, key: int, column: int, icon: QIcon) -> None:
        for i in range(tree.topLevelItemCount()):
            item = tree.topLevelItem(i)
            if item is not None and int(item.data(0, UNIT_ROLE)) == int(key):
                item.setIcon(column, icon)

    # -- showing one map over the image -----------------------------------------------------------
    def _show_channel(self, item: QListWidgetItem | None) -> None:
        if item is not None and self.activations is not None:
            unit = int(item.data(UNIT_ROLE))
            self.image_view.show_heat(self.activations.heatmap(unit),
                                      f"{self.activations.layer}:{unit}")  # fmt: skip

    def _show_unit(self, item: QTreeWidgetItem | None) -> None:
        if item is None or self.activations is None:
            return
        unit = int(item.data(0, UNIT_ROLE))
        if unit < len(self.activations.values):
            self.accent_unit.setValue(unit)
            self.image_view.show_heat(self.activations.heatmap(unit),
                                      f"{self.activations.layer}:{unit}")  # fmt: skip

    def _show_group(self, item: QTreeWidgetItem | None) -> None:
        if item is not None and self.neuron_groups is not None:
            g = int(item.data(0, UNIT_ROLE))
            self.image_view.show_heat(self.neuron_groups.heatmap(g),
                                      f"group {g + 1}/{self.neuron_groups.k}")  # fmt: skip

    def _describe_cell(self, x: int, y: int) -> str:
        grid = self.activation_grid
        if grid is None:
            return ""
        if grid.blank[y, x]:
            return f"cell {x},{y}: blank (near-zero activation)"
        units = ", ".join(str(int(u)) for u in grid.top_units[y, x])
        return f"cell {x},{y}: |a| {float(grid.norms[y, x]):.3g}; top units {units}"
