"""Dialogs for the article's "Interaction between neurons": directions and interpolations.

``DirectionDialog`` renders directions in a layer's channel space: seeded random unit vectors
(Szegedy et al.'s experiment) or the rows of a ``.npy`` file.  ``InterpolationDialog`` blends
two objectives in N frames with the shared low-resolution parameterization and alignment.  Both
only build a job spec; ``spec()`` raises the one-sentence ``FvdeskError`` the dialog shows inline
instead of accepting.  Reading the ``.npy`` file is a small NumPy load (no model work).
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import (
    QButtonGroup,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QRadioButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)


class _SpecDialog(QDialog):
    """OK builds the spec; a bad one keeps the dialog open and says why in one line."""

    def __init__(self, title: str, parent: QWidget | None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.form = QFormLayout()
        self.error = QLabel("")
        self.error.setObjectName("dialogError")
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #b00020")
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Render")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        col = QVBoxLayout(self)
        col.addLayout(self.form)
        col.addWidget(self.error)
        col.addWidget(buttons)
        self.result_spec: Any = None

    def spec(self) -> Any:
        raise NotImplementedError

    def accept(self) -> None:
        from fvdesk.core.errors import FvdeskError

        try:
            self.result_spec = self.spec()
        except FvdeskError as e:
            self.error.setText(str(e))
            return
        self.error.setText("")
        super().accept()


class DirectionDialog(_SpecDialog):
    """Random directions (how many, first seed) or a ``.npy`` file, in one layer."""

    def __init__(self, layer: str, channels: int, parent: QWidget | None = None) -> None:
        super().__init__("Render Directions", parent)
        self.layer, self.channels = layer, int(channels)
        self.random = QRadioButton("Random directions")
        self.from_file = QRadioButton("Directions from a .npy file")
        group = QButtonGroup(self)
        group.addButton(self.random)
        group.addButton(self.from_file)
        self.random.setChecked(True)
        self.count = QSpinBox()
        self.count.setRange(1, 64)
        self.count.setValue(4)
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.path = QLineEdit()
        self.path.setPlaceholderText(f"an array of {channels} numbers, or K rows of {channels}")
        browse = QToolButton()
        browse.setText("…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        holder = QWidget()
        holder.setLayout(row)
        self.facets = QSpinBox()
        self.facets.setRange(1, 16)
        self.negative = QCheckBox("Negative (minimize)")
        self.form.addRow(QLabel(f"Directions in the {channels}-channel space of {layer}"))
        self.form.addRow(self.random)
        self.form.addRow("How many", self.count)
        self.form.addRow("First seed", self.seed)
        self.form.addRow(self.from_file)
        self.form.addRow("File", holder)
        self.form.addRow("Facets each", self.facets)
        self.form.addRow(self.negative)
        self.path.textEdited.connect(lambda _t: self.from_file.setChecked(True))

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Direction vectors", "", "NumPy arrays (*.npy)")
        if path:
            self.path.setText(path)
            self.from_file.setChecked(True)

    def spec(self) -> Any:
        from fvdesk.core.errors import ConfigError
        from fvdesk.core.jobs.job import DirectionJob

        common: dict[str, Any] = {
            "negative": self.negative.isChecked(),
            "facets": self.facets.value(),
        }
        if self.random.isChecked():
            first = self.seed.value()
            seeds = tuple(range(first, first + self.count.value()))
            return DirectionJob(self.layer, seeds=seeds, **common)
        if not self.path.text().strip():
            raise ConfigError("Choose a .npy file of direction vectors.")
        spec = DirectionJob.from_file(self.layer, self.path.text().strip(), **common)
        bad = [len(v) for v in spec.vectors if len(v) != self.channels]
        if bad:
            raise ConfigError(
                f"{self.path.text()} holds vectors of {bad[0]} values; {self.layer} has "
                f"{self.channels} channels."
            )
        return spec


class InterpolationDialog(_SpecDialog):
    """From objective A to objective B (expressions as ``--objective`` takes them) in N frames."""

    def __init__(self, a: str = "", b: str = "", parent: QWidget | None = None,
                 resolve_kind: Any = None) -> None:  # fmt: skip
        """``resolve_kind(layer) -> kind``: the natural kind of a bare ``L:U`` (logit for class
        vectors, channel for feature maps)."""
        super().__init__("Interpolate Between Two Objectives", parent)
        self._kind = resolve_kind
        self.a, self.b = QLineEdit(a), QLineEdit(b)
        for w in (self.a, self.b):
            w.setPlaceholderText("layer:unit, or e.g. L:3 + 0.5*L:7")
        self.frames = QSpinBox()
        self.frames.setRange(2, 32)
        self.frames.setValue(6)
        self.alignment = QDoubleSpinBox()
        self.alignment.setRange(0.0, 10.0)
        self.alignment.setSingleStep(0.1)
        self.alignment.setValue(0.3)
        self.alignment.setToolTip(
            "Weight of the alignment term (neighbouring frames' lower-layer activations alike), "
            "relative to the objective; 0 turns it off."
        )
        self.shared = QCheckBox("Shared low-resolution parameterization")
        self.shared.setChecked(True)
        self.shared.setToolTip(
            "Frames share coarse image components (Lucid's interpolation), so they line up."
        )
        self.form.addRow("From (A)", self.a)
        self.form.addRow("To (B)", self.b)
        self.form.addRow("Frames", self.frames)
        self.form.addRow("Alignment", self.alignment)
        self.form.addRow(self.shared)

    def spec(self) -> Any:
        from fvdesk.core.jobs.job import InterpolationJob, parse_objective

        a = parse_objective(self.a.text(), self._kind)
        b = parse_objective(self.b.text(), self._kind)
        return InterpolationJob(a, b, frames=self.frames.value(),
                                alignment_weight=self.alignment.value(),
                                shared=self.shared.isChecked())  # fmt: skip
