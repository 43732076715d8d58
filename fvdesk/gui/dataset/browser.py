"""The "examples only" view: every unit of a layer as a row of its top dataset crops, with no
rendering.  It runs the activation pass itself (progress, cancel) and decodes crops only for the
rows on screen, so a whole layer is browsed for the cost of one pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QRect,
    QSize,
    Qt,
    QTimer,
    Signal,
)
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLabel,
    QListView,
    QProgressBar,
    QPushButton,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from fvdesk.core.dataset.choice import DatasetChoice
from fvdesk.gui.canvas.tiles import to_qimage
from fvdesk.gui.dataset.examples import fit_rect
from fvdesk.gui.runtime.runners import JobRunner

_ROOT = QModelIndex()


# ------------------------------------------------------------------------------------------------
# A whole layer: the examples-only browser
# ------------------------------------------------------------------------------------------------
class _UnitRows(QAbstractListModel):
    """One row per unit: its caption and (once loaded) its top crops."""

    CropsRole = Qt.ItemDataRole.UserRole + 31
    want = Signal(int)  # a row was painted without its crops

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.units: list[int] = []
        self.captions: list[str] = []
        self.crops: dict[int, list[QImage]] = {}

    def reset(self, units: Sequence[int], captions: Sequence[str]) -> None:
        self.beginResetModel()
        self.units, self.captions, self.crops = list(units), list(captions), {}
        self.endResetModel()

    def rowCount(self, parent: QModelIndex | QPersistentModelIndex = _ROOT) -> int:
        return 0 if parent.isValid() else len(self.units)

    def data(
        self, index: QModelIndex | QPersistentModelIndex, role: int = Qt.ItemDataRole.DisplayRole
    ) -> Any:
        if not index.isValid():
            return None
        r = index.row()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole):
            return self.captions[r]
        if role == self.CropsRole:
            got = self.crops.get(r)
            if got is None:
                self.want.emit(r)
            return got
        return None

    def set_crops(self, row: int, images: list[QImage]) -> None:
        self.crops[row] = images
        i = self.index(row)
        self.dataChanged.emit(i, i, [self.CropsRole])


class _RowDelegate(QStyledItemDelegate):
    CROP = 64

    def sizeHint(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> QSize:
        return QSize(160 + 10 * (self.CROP + 4), self.CROP + 8)

    def paint(
        self, p: QPainter, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        super().paint(p, option, index)
        crops = index.data(_UnitRows.CropsRole)
        r = option.rect
        x = r.x() + 160
        if crops is None:
            p.drawText(QRect(x, r.y(), 200, r.height()), Qt.AlignmentFlag.AlignVCenter, "loading…")
            return
        for img in crops:
            p.drawImage(fit_rect(img.size(), QRect(x, r.y() + 4, self.CROP, self.CROP)), img)
            x += self.CROP + 4

    def initStyleOption(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        super().initStyleOption(option, index)
        option.rect = QRect(option.rect.x(), option.rect.y(), 156, option.rect.height())
        option.displayAlignment = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter


class LayerExamplesBrowser(QWidget):
    """Every unit of a layer as a row of its top crops, without rendering (see module)."""

    unit_selected = Signal(str, int)  # layer, unit
    unit_activated = Signal(str, int)  # double-click / Enter: e.g. render it, show the panel
    examples_ready = Signal(object)  # the ExamplesResult, for the window to reuse
    failed = Signal(str)

    LOAD_CHUNK = 12

    def __init__(self, runner: JobRunner, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.layer_examples: Any = None
        self.result: Any = None
        self._cancel: Callable[[], None] | None = None
        self._queued: list[int] = []
        self._loading = False
        self._generation = 0
        self.label = QLabel("Choose a layer and a dataset.")
        self.label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m images")
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel)
        self.cancel_button.hide()
        self.rows = _UnitRows(self)
        self.rows.want.connect(self._want)
        self.view = QListView()
        self.view.setModel(self.rows)
        self.view.setItemDelegate(_RowDelegate(self.view))
        self.view.setUniformItemSizes(True)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.doubleClicked.connect(self._activated)
        self.view.activated.connect(self._activated)
        self.view.selectionModel().currentChanged.connect(self._selected)
        bar = QHBoxLayout()
        bar.addWidget(self.progress, 1)
        bar.addWidget(self.cancel_button)
        lay = QVBoxLayout(self)
        lay.addWidget(self.label)
        lay.addLayout(bar)
        lay.addWidget(self.view, 1)

    # -- the pass ---------------------------------------------------------------------------------
    def run(self, model: Any, layer: str, choice: DatasetChoice, *,
            labels: Callable[[int], str | None] | None = None, choices: Any = None) -> None:  # fmt: skip
        """Run the dataset pass for ``layer`` (cached passes return at once), then show it;
        ``choices`` (the core's ``Choices`` in force; default the model's own) are the pass's
        preprocessing and the rows' labels."""
        from fvdesk.core.jobs.job import ExamplesJob, Job

        self.cancel()
        self._generation += 1
        gen = self._generation
        spec = ExamplesJob(choice.root, (layer,), top=max(choice.top, 1), bottom=choice.bottom)
        choices = choices if choices is not None else model.choices
        job = Job.for_model(model, spec, choices=choices)
        self.label.setText(f"{layer}: reading {choice.root} …")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        label_fn = labels or (lambda u: choices.label_of(model.graph, layer, u))
        self._cancel = self.runner.submit(
            model, job, lambda ev: self._on_event(gen, ev),
            lambda res: self._on_done(gen, res, layer, label_fn),
            lambda msg: self._on_failed(gen, msg),
        )  # fmt: skip

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel()
            self._cancel = None

    @property
    def running(self) -> bool:
        return self._cancel is not None

    def _on_event(self, gen: int, ev: Any) -> None:
        from fvdesk.core.optim.events import NoticeEvent, ProgressEvent

        if gen != self._generation:
            return
        if isinstance(ev, ProgressEvent):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done if ev.total else 1)
        elif isinstance(ev, NoticeEvent):
            self.label.setToolTip(ev.message)

    def _on_done(
        self, gen: int, result: Any, layer: str, labels: Callable[[int], str | None]
    ) -> None:
        if gen != self._generation:
            return
        self._cancel = None
        self.progress.hide()
        self.cancel_button.hide()
        self.result = result
        self.set_examples(result.layers[layer], labels)
        stopped = " (cancelled: the images done so far)" if result.cancelled else ""
        self.label.setText(f"{layer}: {result.summary()}{stopped}")
        self.examples_ready.emit(result)

    def _on_failed(self, gen: int, message: str) -> None:
        if gen != self._generation:
            return
        self._cancel = None
        self.progress.hide()
        self.cancel_button.hide()
        self.label.setText(message)
        self.failed.emit(message)

    # -- rows and crops ---------------------------------------------------------------------------
    def set_examples(
        self, layer_examples: Any, labels: Callable[[int], str | None] = lambda _u: None
    ) -> None:
        """Show a ``LayerExamples`` (one row per unit); crops load as rows come into view."""
        self.layer_examples = layer_examples
        self._queued = []
        self._generation += 1
        units = list(range(layer_examples.units))
        captions = [f"{u}  {labels(u) or ''}".strip() for u in units]
        self.rows.reset(units, captions)

    def _want(self, row: int) -> None:
        if row not in self._queued:
            self._queued.append(row)
        if not self._loading:
            QTimer.singleShot(0, self._load_next)

    def _load_next(self) -> None:
        if self._loading or not self._queued or self.layer_examples is None:
            return
        rows = [r for r in self._queued[: self.LOAD_CHUNK] if r not in self.rows.crops]
        del self._queued[: self.LOAD_CHUNK]
        if not rows:
            QTimer.singleShot(0, self._load_next)
            return
        self._loading = True
        gen = self._generation
        le = self.layer_examples
        units = [self.rows.units[r] for r in rows]

        def load() -> list[list[np.ndarray]]:
            from fvdesk.core.output.examples import Crops

            crops = Crops()
            out = []
            for u in units:
                ux = le.unit(u, bottom=0)
                got = (crops.get(ux.root, ex) for ex in ux.top)
                out.append([g.crop for g in got if g is not None])
            return out

        def done(arrays: list[list[np.ndarray]]) -> None:
            self._loading = False
            if gen == self._generation:
                for r, crops in zip(rows, arrays, strict=True):
                    self.rows.set_crops(r, [to_qimage(a) for a in crops])
            self._load_next()

        def failed(message: str) -> None:
            self._loading = False
            self.label.setToolTip(message)

        self.runner.call(load, done, failed)

    def _unit_at(self, index: QModelIndex) -> int | None:
        return self.rows.units[index.row()] if index.isValid() and self.layer_examples else None

    def _selected(self, index: QModelIndex, _prev: QModelIndex) -> None:
        u = self._unit_at(index)
        if u is not None:
            self.unit_selected.emit(self.layer_examples.layer, u)

    def _activated(self, index: QModelIndex) -> None:
        u = self._unit_at(index)
        if u is not None:
            self.unit_activated.emit(self.layer_examples.layer, u)
