"""The render settings dock: every knob of the engine, the batch-job choices and the model's
preprocessing and labels.

The dock edits a plain dict; ``to_render_settings()`` turns it into the engine's ``RenderSettings``
by overlaying it on the engine's own defaults (so a field added to the engine keeps its default
here instead of breaking the GUI).  The dock's own defaults favour interactive speed (256 steps,
128 px) over the article's 2560 steps.  Preprocessing and labels belong to the model, not to a render:
changing them is reported through signals and remembered in the model's sidecar by the window.
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


@dataclass(frozen=True)
class Field:
    """One setting: dict key, label, widget kind, default, range and the tooltip that says why."""

    key: str
    label: str
    kind: str  # int | float | bool | choice
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


#: Render settings (keys of the engine's ``RenderSettings``) and GUI batch choices (``ui:`` keys).
# fmt: off
FIELDS: tuple[Field, ...] = (
    Field("steps", "Steps", "int", 256, 1, 20000, 16, group="Optimization",
          tip="Optimization steps per image. The article uses 2560; 256-512 already shows most features."),
    Field("size", "Canvas size", "int", 128, 0, 1024, 16, suffix=" px", special="model's size", group="Optimization",
          tip="Side of the optimized image; at the minimum, the model's own input size. "
              "Models with a fixed input size see the canvas resized."),
    Field("lr", "Learning rate", "float", 0.08, 0.0001, 2.0, 0.01, 4, group="Optimization",
          tip="Adam learning rate, annealed over the second half of the steps (the engine's default; "
              "the article: 0.05, constant)."),
    Field("batch", "Batch size", "int", 8, 1, 512, 1, group="Optimization",
          tip="Images optimized together; many units of a layer render in batches of this size."),
    Field("seed", "Seed", "int", 0, 0, 2**31 - 1, 1, group="Optimization",
          tip="Random seed of the initial image and the transformations: same seed, same image."),
    Field("early_stop", "Stop early below", "float", 0.0, 0.0, 0.5, 0.005, 3, special="off",
          group="Optimization",
          tip="Stop once no image's objective gains more than this share over a window of steps "
              "(then a short learning-rate anneal): the default recipe passes Lucent's 512-step "
              "quality in a fraction of its steps (benchmarks/README.md)."),
    Field("average", "Average the last", "float", 0.0, 0.0, 1.0, 0.05, 2, special="off",
          group="Optimization",
          tip="Share of the steps, at the end, whose images are averaged into the saved one: "
              "smoother images (less fine texture) for a slightly lower objective."),
    Field("device", "Device", "choice", "auto", choices=(("auto", "auto (GPU if available)"), ("cpu", "CPU")),
          group="Optimization", tip="Where renders run. 'auto' picks CUDA, then MPS, then the CPU."),
    Field("param", "Parameterization", "choice", "fourier",
          choices=(("fourier", "Fourier"), ("pixel", "Pixel"), ("maco", "MACO (phase only)"),
                   ("prior", "Learned prior")),
          group="Image", tip="Fourier: optimize a spectrum scaled to equal energy per frequency (less "
                             "high-frequency noise). Pixel: optimize the pixels directly. MACO: "
                             "optimize only the Fourier phase; the magnitude stays a natural-image "
                             "spectrum. Learned prior: optimize a generator's latent (choose it below)."),
    Field("maco_spectrum", "MACO spectrum", "file", "", group="Image", special="fvdesk's natural-image spectrum",
          tip="The magnitude spectrum MACO keeps: a saved spectrum (.npz) or a folder of your images."),
    Field("prior", "Generator", "file", "", group="Image", special="none: open a generator ONNX",
          tip="A generator ONNX (latent -> image) for the learned prior (Nguyen et al. 2016)."),
    Field("decorrelate", "Decorrelate colours", "bool", True, group="Image",
          tip="Optimize in a decorrelated colour space (square root of the ImageNet colour covariance)."),
    Field("transforms", "Transformation robustness", "bool", True, group="Image",
          tip="Pad, jitter, scale and rotate the image every step so features must survive small transformations."),
    Field("tv", "Total variation", "float", 0.0, 0.0, 100.0, 0.0005, 5, special="off", group="Regularizers",
          tip="Penalty on neighbouring pixel differences (frequency penalization)."),
    Field("l1", "L1", "float", 0.0, 0.0, 100.0, 0.0005, 5, special="off", group="Regularizers",
          tip="Penalty on |pixel - 0.5|: pulls the image towards grey."),
    Field("l2", "L2", "float", 0.0, 0.0, 100.0, 0.0005, 5, special="off", group="Regularizers",
          tip="Penalty on (pixel - 0.5)^2: pulls the image towards grey."),
    Field("blur_every", "Blur every", "int", 0, 0, 1000, 1, suffix=" steps", special="off", group="Regularizers",
          tip="Blur the image every N steps (frequency penalization); off = never."),
    Field("bilateral_every", "Bilateral every", "int", 0, 0, 1000, 1, suffix=" steps", special="off",
          group="Regularizers", tip="Edge-preserving smoothing every N steps: noise goes, edges stay (Tyka 2016)."),
    Field("grad_blur", "Gradient blur", "float", 0.0, 0.0, 16.0, 0.25, 2, suffix=" px", special="off",
          group="Preconditioning", tip="Blur the gradient, not the image, each step (Øygard 2015)."),
    Field("lap_levels", "Laplacian pyramid", "int", 0, 0, 8, 1, suffix=" levels", special="off",
          group="Preconditioning",
          tip="Give every octave of the gradient the same strength (Mordvintsev 2016). 1 is not a pyramid."),
    Field("octaves", "Octaves", "int", 1, 1, 8, 1, special="off", group="Preconditioning",
          tip="Optimize at growing sizes, upsampling between: coarse structure first (Mordvintsev 2015)."),
    Field("optimizer", "Update rule", "choice", "adam",
          choices=(("adam", "Adam"), ("l2", "Steepest, L2"), ("linf", "Steepest, L∞ (sign)")),
          group="Preconditioning",
          tip="Adam, or plain steepest ascent under the L2 or L∞ metric (the article's comparison)."),
    Field("preview_every", "Preview every", "int", 16, 1, 1000, 1, suffix=" steps", group="Display",
          tip="How often a running tile shows its current image."),
    Field("ui:first_n", "Units per layer (N)", "int", 16, 1, 4096, 1, group="Batch jobs",
          tip="How many units 'Render First N Units' renders."),
    Field("ui:facets", "Diverse facets", "int", 4, 2, 32, 1, group="Batch jobs",
          tip="How many diverse images 'Render N Diverse Facets' makes of one unit."),
    Field("ui:cluster_facets", "Facets from dataset clusters", "bool", False, group="Batch jobs",
          tip="Facets steered toward clusters of the unit's top dataset examples instead of the "
              "diversity term (needs a dataset: File > Dataset)."),
    Field("ui:class_kind", "Class objective", "choice", "logit",
          choices=(("logit", "Logit (pre-softmax)"), ("prob", "Probability (softmax)")), group="Batch jobs",
          tip="The objective for classes of the logits layer. Logits give better images (the article)."),
)
# fmt: on

GROUPS = ("Optimization", "Image", "Regularizers", "Preconditioning", "Display", "Batch jobs")
#: Groups whose rows show their explanation under the control (not only as a tooltip).
EXPLAINED = ("Regularizers", "Preconditioning")


def default_values() -> dict[str, Any]:
    return {f.key: f.default for f in FIELDS}


class RenderSettingsPanel(QWidget):
    """Form over ``FIELDS`` plus the model's preprocessing and labels."""

    changed = Signal()  # any render/batch value
    file_chosen = Signal(str, str)  # key (prior, maco_spectrum), path ("" = none): validate it
    preprocessing_chosen = Signal(str)  # preset name
    labels_file_chosen = Signal(str)  # path ("" = back to the model's own labels)
    browse_labels_requested = Signal()

    MODEL_DEFAULT = "__model__"

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("renderSettings")
        self.widgets: dict[str, QWidget] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea(self)
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QWidget()
        col = QVBoxLayout(body)
        col.setContentsMargins(6, 6, 6, 6)
        forms: dict[str, QFormLayout] = {}
        for name in GROUPS:
            box = QGroupBox(name, body)
            form = QFormLayout(box)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            form.setContentsMargins(6, 4, 6, 4)
            forms[name] = form
            col.addWidget(box)
        for f in FIELDS:
            w = self._make_widget(f)
            w.setObjectName(f"setting_{f.key.replace(':', '_')}")
            w.setToolTip(f.tip)
            self.widgets[f.key] = w
            if f.key == "seed":
                row = QHBoxLayout()
                row.setContentsMargins(0, 0, 0, 0)
                row.addWidget(w, 1)
                dice = QToolButton()
                dice.setText("New")
                dice.setToolTip("Pick a new random seed")
                dice.clicked.connect(
                    lambda: self.widgets["seed"].setValue(random.randrange(0, 2**31 - 1))
                )  # type: ignore[attr-defined]
                row.addWidget(dice)
                holder = QWidget()
                holder.setLayout(row)
                forms[f.group].addRow(f.label, holder)
            else:
                forms[f.group].addRow(f.label, w)
            if f.group in EXPLAINED:
                forms[f.group].addRow("", _explanation(f.tip))

        # Model: preprocessing + labels (the model's properties, kept in its sidecar).
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
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.labels_edit, 1)
        row.addWidget(browse)
        row.addWidget(clear)
        holder = QWidget()
        holder.setLayout(row)
        form.addRow("Preprocessing", self.preset_combo)
        form.addRow("", self.preset_info)
        form.addRow("Labels", holder)
        self.model_box = box
        col.addWidget(box)

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

    # -- widgets ------------------------------------------------------------------------------
    def _make_widget(self, f: Field) -> QWidget:
        if f.kind == "file":
            return _FileField(f, self)
        if f.kind in ("int", "float"):
            num = int if f.kind == "int" else float
            w = QSpinBox() if f.kind == "int" else QDoubleSpinBox()
            if isinstance(w, QDoubleSpinBox):
                w.setDecimals(f.decimals)
            w.setRange(num(f.lo), num(f.hi))
            w.setSingleStep(num(f.step))
            w.setValue(num(f.default))
            w.setSuffix(f.suffix)
            if f.special:
                w.setSpecialValueText(f.special)
            w.setKeyboardTracking(False)
            w.valueChanged.connect(self.changed)
            return w
        if f.kind == "bool":
            w = QCheckBox()
            w.setChecked(bool(f.default))
            w.toggled.connect(self.changed)
            return w
        w = QComboBox()
        w.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        w.setMinimumContentsLength(8)
        for value, text in f.choices:
            w.addItem(text, value)
        w.setCurrentIndex(max(0, w.findData(f.default)))
        w.currentIndexChanged.connect(self.changed)
        return w

    def _field(self, key: str) -> Field:
        return next(f for f in FIELDS if f.key == key)

    def set_value(self, key: str, value: Any) -> None:
        w = self.widgets.get(key)
        if w is None:
            return
        f = self._field(key)
        try:
            if f.kind == "int":
                w.setValue(int(value))  # type: ignore[attr-defined]
            elif f.kind == "float":
                v = float(value)
                if math.isfinite(v):
                    w.setValue(v)  # type: ignore[attr-defined]
            elif f.kind == "bool":
                w.setChecked(bool(value))  # type: ignore[attr-defined]
            elif f.kind == "file":
                w.set_path(str(value or ""))  # type: ignore[attr-defined]
            else:
                combo: QComboBox = w  # type: ignore[assignment]
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
            return w.value()  # type: ignore[attr-defined]
        if f.kind == "bool":
            return w.isChecked()  # type: ignore[attr-defined]
        if f.kind == "file":
            return w.path()  # type: ignore[attr-defined]
        return w.currentData()  # type: ignore[attr-defined]

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
        combo: QComboBox = self.widgets["device"]  # type: ignore[assignment]
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
    """The engine's ``RenderSettings`` for the dock's values, over the engine's own defaults."""
    from fvdesk.core.optim.settings import RenderSettings

    render, _ = split_values(values)
    for f in FIELDS:
        if f.kind == "file" and f.key in render:
            render[f.key] = render[f.key] or None  # an empty path is no file
    if not render.get("size"):
        render["size"] = None  # the dock's minimum: the model's own input size
    else:
        render["size"] = max(8, int(render["size"]))  # the engine's smallest canvas
    base = RenderSettings().to_dict()
    transforms_on = bool(render.pop("transforms", True))
    merged = {**base, **{k: v for k, v in render.items() if k in base}}
    if not transforms_on:
        merged["transforms"] = None
    elif base.get("transforms") is None:
        merged.pop("transforms", None)
    return RenderSettings.from_dict(merged)
