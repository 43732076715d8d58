"""Neuron arithmetic in the app: a list of weighted unit objectives rendered as one image.

The article adds a "black and white" neuron to a "mosaic" neuron and gets a black-and-white
mosaic.  The builder holds the terms (units added from the layer tree, or at a picked neuron
position), each with any real weight (negative ones subtract), and renders their sum as a
``CombinationJob`` through the ``Submit`` callable it was given; the expression it shows is the
one ``fvdesk render --objective`` accepts, so a combination moves between app and CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

#: ``submit(spec)``: queue a job spec with the open model and the dock's settings (the job
#: controller's ``JobController.submit``); model work happens on the render thread.
Submit = Callable[[Any], Any]

#: Weights the spin box accepts; any real number in practice.
WEIGHT_RANGE = 1e6


class CombinationBuilder(QWidget):
    """Terms table (unit, kind, weight, remove), the expression, Render and Clear."""

    changed = Signal()  # the terms changed
    render_requested = Signal(object)  # the CombinationJob spec, just before it is submitted

    COLUMNS = ("Unit", "Kind", "Weight", "")

    def __init__(self, submit: Submit, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("combinationBuilder")
        self._submit = submit
        self._terms: list[Any] = []
        self.table = QTableWidget(0, len(self.COLUMNS), self)
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().setVisible(False)
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in (1, 2, 3):
            head.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.expression = QLineEdit()
        self.expression.setReadOnly(True)
        self.expression.setObjectName("combinationExpression")
        self.expression.setPlaceholderText("Add units from the layer tree")
        self.expression.setToolTip("The same objective for `fvdesk render --objective`")
        self.negative = QCheckBox("Negative")
        self.negative.setToolTip("Minimize the sum instead: the opposite example")
        self.facets = QSpinBox()
        self.facets.setRange(1, 32)
        self.facets.setPrefix("facets ")
        self.facets.setToolTip("Diverse images of the combination (the diversity term)")
        self.render_button = QPushButton("Render Combination")
        self.render_button.clicked.connect(self.render)
        clear = QPushButton("Clear")
        clear.clicked.connect(self.clear)
        self.hint = QLabel("Weights may be any real number; negative ones subtract a unit.")
        self.hint.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.negative)
        row.addWidget(self.facets)
        row.addStretch(1)
        row.addWidget(clear)
        row.addWidget(self.render_button)
        col = QVBoxLayout(self)
        col.setContentsMargins(4, 4, 4, 4)
        col.addWidget(self.table, 1)
        col.addWidget(self.expression)
        col.addWidget(self.hint)
        col.addLayout(row)
        self._refresh()

    # -- terms ----------------------------------------------------------------------------------
    def add_term(self, layer: str, unit: int, kind: str = "channel", weight: float = 1.0,
                 x: int | None = None, y: int | None = None) -> None:  # fmt: skip
        """Add ``weight * kind(layer:unit)`` (``x, y``: a neuron's position)."""
        from fvdesk.core.jobs.job import Term

        self._terms.append(Term(layer, int(unit), kind, float(weight), x, y))
        self._refresh()

    def terms(self) -> tuple[Any, ...]:
        return tuple(self._terms)

    def set_weight(self, row: int, weight: float) -> None:
        from dataclasses import replace

        self._terms[row] = replace(self._terms[row], weight=float(weight))
        self._update_expression()

    def remove(self, row: int) -> None:
        del self._terms[row]
        self._refresh()

    def clear(self) -> None:
        self._terms.clear()
        self._refresh()

    def spec(self) -> Any:
        """The ``CombinationJob`` the builder describes (``ConfigError`` when empty)."""
        from fvdesk.core.jobs.job import CombinationJob

        return CombinationJob(self.terms(), negative=self.negative.isChecked(),
                              facets=self.facets.value())  # fmt: skip

    def render(self) -> Any:  # type: ignore[override]  # a slot; QWidget.render (paint into a device) is never called here
        """Submit the combination; returns what ``submit`` returns (``None`` when empty)."""
        if not self._terms:
            return None
        spec = self.spec()
        self.render_requested.emit(spec)
        return self._submit(spec)

    # -- display --------------------------------------------------------------------------------
    def _refresh(self) -> None:
        self.table.setRowCount(len(self._terms))
        for row, t in enumerate(self._terms):
            at = "" if t.x is None and t.y is None else f" @ {t.x},{t.y}"
            self.table.setCellWidget(row, 0, QLabel(f"{t.layer}:{t.unit}{at}"))
            self.table.setCellWidget(row, 1, QLabel(t.kind))
            spin = QDoubleSpinBox()
            spin.setObjectName(f"weight{row}")
            spin.setDecimals(3)
            spin.setRange(-WEIGHT_RANGE, WEIGHT_RANGE)
            spin.setSingleStep(0.1)
            spin.setKeyboardTracking(False)
            spin.setValue(t.weight)
            spin.valueChanged.connect(lambda v, r=row: self.set_weight(r, v))
            self.table.setCellWidget(row, 2, spin)
            rm = QToolButton()
            rm.setText("×")
            rm.setToolTip("Remove this term")
            rm.clicked.connect(lambda _=False, r=row: self.remove(r))
            self.table.setCellWidget(row, 3, rm)
        self.render_button.setEnabled(bool(self._terms))
        self._update_expression()

    def _update_expression(self) -> None:
        self.expression.setText(expression(self._terms))
        self.changed.emit()


def expression(terms: Any) -> str:
    """The ``--objective`` expression for ``terms`` (``L:1 + 0.5*L:4 - L:7``)."""
    parts = []
    for i, t in enumerate(terms):
        body = f"{t.layer}:{t.unit}" + ("" if t.x is None else f"@{t.x},{t.y}")
        if t.kind not in ("channel", "logit", "neuron"):
            body = f"{t.kind}({body})"
        w = abs(t.weight)
        text = body if w == 1 else f"{w:g}*{body}"
        sign = "-" if t.weight < 0 else "+"
        parts.append(f"{sign} {text}" if i or sign == "-" else text)
    return " ".join(parts)
