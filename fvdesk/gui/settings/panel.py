"""The render settings dock: every option of the engine, the batch-job choices and the model's
preprocessing and labels.

The render controls are generated from the core's table of options
(``fvdesk.core.optim.options``: label, control, range, tooltip and section of each), so the dock
and the CLI's flags cannot drift apart; the options the core lists as ``EXPERT`` are in the
collapsed "Advanced" section.  The dock edits a plain dict; ``to_render_settings()`` hands it to the
core's ``options.settings_from`` (the one conversion, the CLI's too).  The dock's own defaults
favour interactive speed (128 px) and come from the same table.  Preprocessing and labels belong
to the model, not to a render: changing them is reported through signals and kept by the session.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from PySide6.QtCore import QSignalBlocker, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from fvdesk.core.optim.kinds import CLASS_KINDS
from fvdesk.core.optim.options import ADVANCED, SECTIONS, dock_options, option, settings_from


@dataclass(frozen=True)
class Field:
    """One control: dict key, label, widget kind, default, range and the tooltip that says why."""

    key: str
    label: str
    kind: str  # int | float | bool | choice | file | list
    default: Any
    lo: float = 0
    hi: float = 0
    step: float = 1
    decimals: int = 0
    choices: tuple[tuple[str, str], ...] = ()  # (value, text)
    tip: str = ""
    group: str = ""
    suffix: str = ""
    special: str = ""  # text shown at the minimum (e.g. "off")


def field_of(o: Any) -> Field:
    """The control of a core ``Option`` (its ``Look``): nothing about it is restated here."""
    look = o.look
    lo = 0.0 if o.optional or o.low is None else float(o.low)
    if o.above and not o.optional:
        lo += 10.0 ** -(look.decimals if look else 0)
    texts = look.texts if look and look.texts else tuple(o.choices or ())
    return Field(o.name, o.label, o.widget, o.dock_default(), lo, look.hi if look else 0,
                 look.step if look else 1, look.decimals if look else 0,
                 tuple(zip(o.choices or (), texts, strict=True)), o.tip, o.section,
                 look.suffix if look else "", look.special if look else "")  # fmt: skip


#: The app's own batch-job choices (``ui:`` keys; not render settings, so not core options).
# fmt: off
UI_FIELDS: tuple[Field, ...] = (
    Field("ui:first_n", "Units per layer (N)", "int", 16, 1, 4096, 1, group="Batch jobs",
          tip="How many units 'Render First N Units' renders."),
    Field("ui:facets", "Diverse facets", "int", 4, 2, 32, 1, group="Batch jobs",
          tip="How many diverse images 'Render N Diverse Facets' makes of one unit."),
    Field("ui:cluster_facets", "Facets from dataset clusters", "bool", False, group="Batch jobs",
          tip="Facets steered toward clusters of the unit's top dataset examples instead of the "
              "diversity term (needs a dataset: File > Dataset)."),
    Field("ui:class_kind", "Class objective", "choice", CLASS_KINDS[0],
          choices=tuple(zip(CLASS_KINDS, ("Logit (pre-softmax)", "Probability (softmax)"),
                            strict=True)), group="Batch jobs",
          tip="The objective for classes of the logits layer. Logits give better images (the article)."),
)
# fmt: on
#: Every control of the dock: the core's options and switches, then the app's batch choices.
FIELDS: tuple[Field, ...] = tuple(field_of(o) for o in dock_options()) + UI_FIELDS

GROUPS = (*(s for s in SECTIONS if s != ADVANCED), "Batch jobs")
#: Groups whose rows show their explanation under the control (not only as a tooltip).
EXPLAINED = ("Regularizers", "Preconditioning")


def default_values() -> dict[str, Any]:
    return {f.key: f.default for f in FIELDS}


def _row(first: QWidget, *rest: QWidget) -> QWidget:
    """``first`` stretched, then ``rest``, on one form row."""
    row = QHBoxLayout()
    row.setContentsMargins(0, 0, 0, 0)
    row.addWidget(first, 1)
    for w in rest:
        row.addWidget(w)
    holder = QWidget()
    holder.setLayout(row)
    return holder


class RenderSettingsPanel(QWidget):
    """Form over ``FIELDS`` plus the model's preprocessing and labels; the ``EXPERT`` options
    in a collapsed "Advanced" section."""

    changed = Signal()  # any render/batch value
    rejected = Signal(str)  # a typed value was refused: the sentence saying why
    file_chosen = Signal(str, str)  # key (prior, maco_spectrum), path ("" = none): validate it
    preprocessing_chosen = Signal(str)  # preset name
    labels_file_chosen = Signal(str)  # path ("" = back to the model's own labels)
    browse_labels_requested = Signal()

    MODEL_DEFAULT = "__model__"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("renderSettings")
        self.widgets: dict[str, Any] = {}  # each field's own widget class (its kind says which)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget()
        col = QVBoxLayout(body)
        col.setContentsMargins(6, 6, 6, 6)
        self._build_fields(body, col)
        col.addWidget(self._build_model_box(body))
        col.addWidget(self.advanced)

        reset = QPushButton("Restore Defaults")
        reset.setToolTip("Put every render setting back to its default")
        reset.clicked.connect(self.restore_defaults)
        col.addWidget(reset)
        col.addStretch(1)
        scroll.setWidget(body)
        # Never clip the form: the dock is at least as wide as the form plus its scroll bar.
        scroll.setMinimumWidth(
            body.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width() + 2
        )
        outer.addWidget(scroll)
        self.show_model(None)

    # -- building the form --------------------------------------------------------------------
    def _build_fields(self, body: QWidget, col: QVBoxLayout) -> None:
        """A group box per group of ``FIELDS`` (the Advanced section collapsed), one row each."""
        forms: dict[str, QFormLayout] = {}
        for name in GROUPS:
            box = QGroupBox(name, body)
            form = QFormLayout(box)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            form.setContentsMargins(6, 4, 6, 4)
            forms[name] = form
            col.addWidget(box)
        self.advanced = _Collapsible(ADVANCED, body)
        self.advanced.setToolTip("Options for experts: the engine's defaults rarely need them.")
        forms[ADVANCED] = self.advanced.form
        for f in FIELDS:
            w = self._make_widget(f)
            w.setObjectName(f"setting_{f.key.replace(':', '_')}")
            w.setToolTip(f.tip)
            self.widgets[f.key] = w
            forms[f.group].addRow(f.label, self._seed_row(w) if f.key == "seed" else w)
            if f.group in EXPLAINED:
                forms[f.group].addRow("", _explanation(f.tip))

    def _seed_row(self, spin: Any) -> QWidget:  # spin: the seed field's QSpinBox
        dice = QToolButton()
        dice.setText("New")
        dice.setToolTip("Pick a new random seed")
        dice.clicked.connect(lambda: spin.setValue(random.randrange(0, 2**31 - 1)))
        return _row(spin, dice)

    def _build_model_box(self, body: QWidget) -> QGroupBox:
        """The model's preprocessing and labels (its properties, kept in its sidecar)."""
        box = QGroupBox("Model", body)
        form = QFormLayout(box)
        form.setContentsMargins(6, 4, 6, 4)
        self.preset_combo = QComboBox()
        self.preset_combo.setObjectName("preprocessingCombo")
        self.preset_combo.setSizeAdjustPolicy(
            QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.preset_combo.setMinimumContentsLength(8)
        self.preset_combo.setToolTip(
            "How an RGB image in [0, 1] is turned into the model's input. Wrong preprocessing is the "
            "most common cause of bad renders; the choice is remembered next to the model."
        )
        self.preset_combo.activated.connect(self._on_preset)
        self.preset_info = QLabel()
        self.preset_info.setWordWrap(True)
        self.preset_info.setObjectName("preprocessingInfo")
        self.labels_edit = QLineEdit()
        self.labels_edit.setReadOnly(True)
        self.labels_edit.setPlaceholderText("labels of the model")
        self.labels_edit.setObjectName("labelsFile")
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip("Choose a labels file (.txt one per line, or JSON)")
        browse.clicked.connect(self.browse_labels_requested)
        clear = self.labels_clear = QToolButton()
        clear.setObjectName("labelsClear")
        clear.setText("×")
        clear.setToolTip("Back to the labels the model came with")
        clear.clicked.connect(lambda: self.labels_file_chosen.emit(""))
        holder = _row(self.labels_edit, browse, clear)
        form.addRow("Preprocessing", self.preset_combo)
        form.addRow("", self.preset_info)
        form.addRow("Labels", holder)
        self.model_box = box
        return box

    # -- widgets ------------------------------------------------------------------------------
    def _make_widget(self, f: Field) -> QWidget:
        if f.kind == "file":
            return _FileField(f, self)
        if f.kind == "list":
            return _ListField(f, self)
        if f.kind in ("int", "float"):
            num = int if f.kind == "int" else float
            w = QSpinBox() if f.kind == "int" else QDoubleSpinBox()
            if isinstance(w, QDoubleSpinBox):
                w.setDecimals(f.decimals)
            w.setRange(num(f.lo), num(f.hi))  # type: ignore[arg-type]  # num is int for a QSpinBox
            w.setSingleStep(num(f.step))  # type: ignore[arg-type]  # num is int for a QSpinBox
            w.setValue(num(f.default))  # type: ignore[arg-type]  # num is int for a QSpinBox
            w.setSuffix(f.suffix)
            if f.special:
                w.setSpecialValueText(f.special)
            w.setKeyboardTracking(False)
            w.valueChanged.connect(self.changed)
            return w
        if f.kind == "bool":
            box = QCheckBox()
            box.setChecked(bool(f.default))
            box.toggled.connect(self.changed)
            return box
        combo = QComboBox()
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(8)
        for value, text in f.choices:
            combo.addItem(text, value)
        combo.setCurrentIndex(max(0, combo.findData(f.default)))
        combo.currentIndexChanged.connect(self.changed)
        return combo

    def _field(self, key: str) -> Field:
        return next(f for f in FIELDS if f.key == key)

    def set_value(self, key: str, value: Any) -> None:
        w = self.widgets.get(key)
        if w is None:
            return
        f = self._field(key)
        try:
            if f.kind == "int":
                w.setValue(int(value))
            elif f.kind == "float":
                v = float(value)
                if math.isfinite(v):
                    w.setValue(v)
            elif f.kind == "bool":
                w.setChecked(bool(value))
            elif f.kind == "file":
                w.set_path(str(value or ""))
            elif f.kind == "list":
                w.set_value(value)
            else:
                combo: QComboBox = w
                i = combo.findData(value)
                if i < 0 and key == "device" and isinstance(value, str) and value:
                    combo.addItem(value, value)
                    i = combo.count() - 1
                if i >= 0:
                    combo.setCurrentIndex(i)
        except (TypeError, ValueError):
            pass  # a malformed stored value keeps the widget's current value

    def value(self, key: str) -> Any:
        w = self.widgets[key]
        f = self._field(key)
        if f.kind in ("int", "float"):
            return w.value()
        if f.kind == "bool":
            return w.isChecked()
        if f.kind == "file":
            return w.path()
        if f.kind == "list":
            return w.value()
        return w.currentData()

    def values(self) -> dict[str, Any]:
        return {f.key: self.value(f.key) for f in FIELDS}

    def set_values(self, values: dict[str, Any]) -> None:
        blockers = [QSignalBlocker(w) for w in self.widgets.values()]
        for key, v in values.items():
            self.set_value(key, v)
        del blockers
        self.changed.emit()

    def restore_defaults(self) -> None:
        self.set_values(default_values())

    def set_devices(self, devices: list[tuple[str, str]]) -> None:
        """Offer the devices this machine has (called once torch is loaded)."""
        combo: QComboBox = self.widgets["device"]
        current = combo.currentData()
        with QSignalBlocker(combo):
            combo.clear()
            for value, text in devices:
                combo.addItem(text, value)
            i = combo.findData(current)
            if i < 0:
                combo.addItem(str(current), current)
                i = combo.count() - 1
            combo.setCurrentIndex(i)

    def show_input(self, spec: Any | None) -> None:
        """The open model's input (``InputSpec``): the canvas steps by the sizes it takes, and
        the tooltip says its rule (the core's words)."""
        size: QSpinBox = self.widgets["size"]
        f = self._field("size")
        multiple = int(getattr(spec, "size_multiple", 1) or 1)
        size.setSingleStep(multiple if multiple > 1 and not spec.fixed_size else int(f.step))  # type: ignore[union-attr]  # multiple > 1 only with a spec
        size.setToolTip(f.tip + (f" This model: {spec.describe_size()}." if spec else ""))

    # -- model part ---------------------------------------------------------------------------
    def show_model(
        self,
        preprocessing: Any | None,
        *,
        labels_count: int = 0,
        labels_source: str = "",
        labels_file: str = "",
    ) -> None:
        """Show the open model's preprocessing and labels (``None``: no model open)."""
        self.model_box.setEnabled(preprocessing is not None)
        if preprocessing is None:  # no torch import here: the window must appear fast
            with QSignalBlocker(self.preset_combo):
                self.preset_combo.clear()
            self.preset_info.setText("")
            self.labels_edit.setText("")
            return
        from fvdesk.core.model.preprocessing import PRESETS

        pre = preprocessing
        with QSignalBlocker(self.preset_combo):
            self.preset_combo.clear()
            for name, p in PRESETS.items():
                self.preset_combo.addItem(f"{name}: {_short(p)}", name)
            i = self.preset_combo.findData(pre.preset)
            if i < 0:
                self.preset_combo.addItem(f"{pre.preset}: {_short(pre)}", pre.preset)
                i = self.preset_combo.count() - 1
            self.preset_combo.setCurrentIndex(i)
        warn = ""
        if pre.source == "default":
            warn = "<br><b>Only a default</b>: the model does not say how it was trained. Check it."
        self.preset_info.setText(f"<small>{pre.describe()}{warn}</small>")
        src = labels_source or "none"
        self.labels_edit.setText(
            labels_file or (f"{labels_count} labels ({src})" if labels_count else "no labels")
        )
        self.labels_edit.setToolTip(labels_file or f"Labels from: {src}")

    def _on_preset(self, index: int) -> None:
        name = self.preset_combo.itemData(index)
        if name:
            self.preprocessing_chosen.emit(str(name))


def _explanation(text: str) -> QLabel:
    label = QLabel(f"<small>{text}</small>")
    label.setWordWrap(True)
    label.setObjectName("settingExplanation")
    return label


class _Collapsible(QWidget):
    """A section that opens and closes by its header (closed at first)."""

    def __init__(self, title: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("advancedSettings")
        self.toggle = QToolButton()
        self.toggle.setObjectName("advancedToggle")
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.toggled.connect(self.set_open)
        self.body = QWidget()
        self.form = QFormLayout(self.body)
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.form.setContentsMargins(6, 4, 6, 4)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.toggle)
        lay.addWidget(self.body)
        self.set_open(False)

    def set_open(self, on: bool) -> None:
        self.body.setVisible(on)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        if self.toggle.isChecked() != on:
            self.toggle.setChecked(on)

    def is_open(self) -> bool:
        return self.toggle.isChecked()


class _ListField(QLineEdit):
    """A comma list of numbers (scales, angles): read by the core option's own parser; a value
    it refuses is one sentence and the previous value stays."""

    def __init__(self, f: Field, panel: RenderSettingsPanel) -> None:
        super().__init__()
        self.option, self.panel = option(f.key), panel
        self._value: Any = f.default
        self.setText(self.option.text_of(f.default))
        self.setPlaceholderText("none")
        self.editingFinished.connect(self._edited)

    def value(self) -> Any:
        return self._value

    def set_value(self, value: Any) -> None:
        self._value = tuple(value) if isinstance(value, list) else value
        self.setText(self.option.text_of(self._value))

    def _edited(self) -> None:
        from fvdesk.core.errors import ConfigError

        try:
            value = self.option.parse(self.text())
        except ConfigError as exc:
            self.setText(self.option.text_of(self._value))
            self.panel.rejected.emit(f"{self.option.label}: {exc}")
            return
        if value != self._value:
            self._value = value
            self.panel.changed.emit()


class _FileField(QWidget):
    """A file setting: the path (read-only), a chooser and a clear button; empty = none."""

    def __init__(self, f: Field, panel: RenderSettingsPanel) -> None:
        super().__init__()
        self.key, self.panel = f.key, panel
        self.previous = ""  # the path before the last choice: what a rejected file gives back
        self.edit = QLineEdit()
        self.edit.setReadOnly(True)
        self.edit.setPlaceholderText(f.special)
        browse = QToolButton()
        browse.setText("…")
        browse.setToolTip(f.tip)
        browse.clicked.connect(self._browse)
        clear = QToolButton()
        clear.setText("×")
        clear.setToolTip("None")
        clear.clicked.connect(lambda: self.choose(""))
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.edit, 1)
        row.addWidget(browse)
        row.addWidget(clear)

    def path(self) -> str:
        return self.edit.text()

    def set_path(self, path: str) -> None:
        self.edit.setText(path)
        self.edit.setToolTip(path)

    def choose(self, path: str) -> None:
        """The user's choice: shown, announced (the window validates files off the GUI thread)."""
        self.previous = self.path()
        self.set_path(path)
        self.panel.changed.emit()
        self.panel.file_chosen.emit(self.key, path)

    def _browse(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        what = "Spectrum (*.npz);;All files (*)" if self.key == "maco_spectrum" else "ONNX (*.onnx)"
        path, _ = QFileDialog.getOpenFileName(self, "Choose a file", "", what)
        if path:
            self.choose(path)


def _short(p: Any) -> str:
    order = "BGR" if p.bgr else "RGB"
    mean = "" if all(m == 0 for m in p.mean) else f", mean {tuple(round(m, 3) for m in p.mean)}"
    return f"[{p.lo:g}, {p.hi:g}] {order}{mean}"


def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(render settings dict, GUI-only ``ui:`` values without their prefix)."""
    render = {k: v for k, v in values.items() if not k.startswith("ui:")}
    ui = {k[3:]: v for k, v in values.items() if k.startswith("ui:")}
    return render, ui


def to_render_settings(values: dict[str, Any]) -> Any:
    """The engine's ``RenderSettings`` for the dock's values: the core's ``settings_from`` (an
    empty file is none, a size of 0 the model's own, the transforms switch), over the engine's
    defaults."""
    render, _ = split_values(values)
    return settings_from(render)
