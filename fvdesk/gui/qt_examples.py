"""Dataset examples in the app: the panel beside a render, the layer browser, the dataset dialog.

* ``ExamplesPanel`` shows one unit's most and least exciting images of the user's folder: each
  the whole image with the unit's receptive-field box drawn on it, and the crop, with its value;
  and the unit's histogram over the folder with the render's own value marked.  Double-clicking
  an example asks for it to be opened (``open_requested``; by default the system viewer).
* ``LayerExamplesBrowser`` is the "examples only" view: every unit of a layer as a row of its top
  crops, with no rendering; it runs the activation pass itself (progress, cancel) and loads
  crops only for the rows on screen.
* ``DatasetDialog`` chooses the folder, the number of examples and whether the folder's colour
  statistics drive the decorrelation, shows what the folder holds and the cache's size, and
  clears the cache.

Widgets only display.  Model work (the pass, decoding source images, scanning, clearing the
cache) goes through a ``JobRunner`` the window gives them, so it never runs on the GUI thread and
plugs into the app's job controller: ``QueueRunner`` runs jobs on the app's ``RenderQueue``,
``ThreadRunner`` is a self-contained one (daemon threads, a signal per event).  docs/INTEGRATION-examples.md says how the window wires these.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PySide6.QtCore import (
    QAbstractListModel,
    QModelIndex,
    QObject,
    QPersistentModelIndex,
    QPointF,
    QRect,
    QRectF,
    QSize,
    Qt,
    QTimer,
    QUrl,
    Signal,
)
from PySide6.QtGui import QColor, QDesktopServices, QImage, QPainter, QPen
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListView,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QStyledItemDelegate,
    QStyleOptionViewItem,
    QVBoxLayout,
    QWidget,
)

from fvdesk.core.dataset.choice import DatasetChoice
from fvdesk.gui.qt_tiles import to_qimage
from fvdesk.gui.qt_worker import error_text

EventFn = Callable[[Any], None]
DoneFn = Callable[[Any], None]
FailFn = Callable[[str], None]
_ROOT = QModelIndex()


# ------------------------------------------------------------------------------------------------
# Running work off the GUI thread
# ------------------------------------------------------------------------------------------------
class JobRunner(Protocol):
    """What the widgets need from the app: run a core job, or a plain function, off the GUI
    thread; the callbacks are called on the GUI thread."""

    def submit(self, model: Any, job: Any, on_event: EventFn, on_done: DoneFn,
               on_failed: FailFn) -> Callable[[], None]:  # fmt: skip
        """Start ``run_job(model, job)``; returns a function that cancels it."""
        ...

    def call(self, fn: Callable[[], Any], on_done: DoneFn, on_failed: FailFn) -> None:
        """Run ``fn()``; its value goes to ``on_done``, a failure's message to ``on_failed``."""
        ...


class ThreadRunner(QObject):
    """A ``JobRunner`` on daemon threads: every event and result crosses to the GUI thread as a
    queued signal; ``shutdown`` cancels what runs and waits for it."""

    _event = Signal(int, object)
    _done = Signal(int, object)
    _failed = Signal(int, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._tasks: dict[int, tuple[EventFn | None, DoneFn, FailFn]] = {}
        self._threads: dict[int, tuple[threading.Thread, threading.Event]] = {}
        self._event.connect(self._on_event)
        self._done.connect(self._on_done)
        self._failed.connect(self._on_failed)

    def submit(self, model: Any, job: Any, on_event: EventFn, on_done: DoneFn,
               on_failed: FailFn) -> Callable[[], None]:  # fmt: skip
        from fvdesk.core.optim.drive import drive
        from fvdesk.core.optim.run import run_job

        cancel = threading.Event()
        tid = next(self._ids)

        def work() -> Any:
            return drive(run_job(model, job, cancel), lambda ev: self._event.emit(tid, ev))

        self._start(tid, work, on_event, on_done, on_failed, cancel)
        return cancel.set

    def call(self, fn: Callable[[], Any], on_done: DoneFn, on_failed: FailFn) -> None:
        self._start(next(self._ids), fn, None, on_done, on_failed, threading.Event())

    def busy(self) -> bool:
        return any(t.is_alive() for t, _ in self._threads.values())

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Cancel every job, wait for the threads (True when all stopped)."""
        for _, cancel in self._threads.values():
            cancel.set()
        for t, _ in list(self._threads.values()):
            t.join(timeout)
        return not self.busy()

    def _start(self, tid: int, work: Callable[[], Any], on_event: EventFn | None, on_done: DoneFn,
               on_failed: FailFn, cancel: threading.Event) -> None:  # fmt: skip
        self._tasks[tid] = (on_event, on_done, on_failed)

        def main() -> None:
            try:
                value = work()
            except Exception as e:  # noqa: BLE001 - every failure reaches the GUI as one sentence
                self._failed.emit(tid, error_text(e))
                return
            self._done.emit(tid, value)

        t = threading.Thread(target=main, name=f"fvdesk-examples-{tid}", daemon=True)
        self._threads[tid] = (t, cancel)
        t.start()

    def _on_event(self, tid: int, ev: object) -> None:
        task = self._tasks.get(tid)
        if task is not None and task[0] is not None:
            task[0](ev)

    def _on_done(self, tid: int, value: object) -> None:
        task = self._tasks.pop(tid, None)
        self._threads.pop(tid, None)
        if task is not None:
            task[1](value)

    def _on_failed(self, tid: int, message: str) -> None:
        task = self._tasks.pop(tid, None)
        self._threads.pop(tid, None)
        if task is not None:
            task[2](message)


class QueueRunner(QObject):
    """A ``JobRunner`` over the app's ``RenderQueue`` (jobs take their turn on the render thread,
    so a pass never competes with a render for the cores) and ``BackgroundCall`` (functions)."""

    def __init__(self, queue: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self._tasks: dict[int, tuple[EventFn, DoneFn, FailFn]] = {}
        queue.job_event.connect(self._on_event)
        queue.job_finished.connect(self._on_finished)
        queue.job_failed.connect(lambda task, message, _exc: self._end(task, 2, message))
        queue.job_dropped.connect(lambda task: self._end(task, 2, "Cancelled before it ran."))

    def submit(self, model: Any, job: Any, on_event: EventFn, on_done: DoneFn,
               on_failed: FailFn) -> Callable[[], None]:  # fmt: skip
        def start(cancel: threading.Event) -> Any:
            from fvdesk.core.optim.run import run_job

            return run_job(model, job, cancel)

        return self.run(job.title, start, on_event, on_done, on_failed, job=job, model=model)

    def run(self, title: str, start: Callable[[threading.Event], Any], on_event: EventFn,
            on_done: DoneFn, on_failed: FailFn, *, job: Any = None,
            model: Any = None) -> Callable[[], None]:  # fmt: skip
        """Queue any model work: ``start(cancel)`` returns the generator the render thread
        drives (e.g. clustering examples, which runs the model)."""
        from fvdesk.gui.qt_worker import Task

        task = Task(title, start, job=job, model=model)
        self._tasks[task.id] = (on_event, on_done, on_failed)
        self.queue.submit(task)
        return lambda: self.queue.cancel_job(task)

    def call(self, fn: Callable[[], Any], on_done: DoneFn, on_failed: FailFn) -> None:
        from fvdesk.gui.qt_worker import BackgroundCall

        bc = BackgroundCall(lambda _progress: fn(), name="fvdesk-examples")
        bc.done.connect(on_done)
        bc.failed.connect(lambda message, _exc: on_failed(message))
        bc.start()

    def _on_event(self, task: Any, ev: object) -> None:
        cbs = self._tasks.get(task.id)
        if cbs is not None:
            cbs[0](ev)

    def _on_finished(self, task: Any, result: object) -> None:
        self._end(task, 1, result)

    def _end(self, task: Any, which: int, value: Any) -> None:
        cbs = self._tasks.pop(task.id, None)
        if cbs is not None:
            cbs[which](value)


def open_in_viewer(path: Path) -> None:
    """The default for ``open_requested``: the system's image viewer."""
    QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))


def percent_text(fraction: float) -> str:
    """``99.7%``, with ``<0.1%`` / ``>99.9%`` at the ends (a render usually beats every image)."""
    if not math.isfinite(fraction):
        return "n/a"
    p = 100 * fraction
    if 0 < p < 0.1:
        return "<0.1%"
    if 99.9 < p < 100:
        return ">99.9%"
    return f"{p:.1f}%"


# ------------------------------------------------------------------------------------------------
# One unit: the panel
# ------------------------------------------------------------------------------------------------
class ExampleTile(QFrame):
    """One example: the whole image with the receptive-field box, the crop, the value."""

    activated = Signal(object)  # the Example

    FULL, CROP = 112, 72

    def __init__(self, example: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.example = example
        self.full: QImage | None = None
        self.crop: QImage | None = None
        self.box: tuple[float, float, float, float] | None = None
        self.failed = False
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setFixedSize(self.FULL + self.CROP + 14, self.FULL + 22)
        self.setToolTip(
            f"{example.rel}\nvalue {example.value:.4g} at grid ({example.grid[1]}, {example.grid[0]})\n"
            "double-click to open"
        )

    @property
    def loaded(self) -> bool:
        return self.full is not None or self.failed

    def set_images(self, images: Any | None) -> None:
        """``ExampleImages`` from the core, or ``None`` when the file cannot be read any more."""
        if images is None:
            self.failed = True
        else:
            self.full, self.crop, self.box = (
                to_qimage(images.full),
                to_qimage(images.crop),
                images.box,
            )
        self.update()

    def mouseDoubleClickEvent(self, e: Any) -> None:
        self.activated.emit(self.example)

    def paintEvent(self, e: Any) -> None:
        super().paintEvent(e)
        p = QPainter(self)
        r_full = QRect(4, 4, self.FULL, self.FULL)
        r_crop = QRect(8 + self.FULL, 4, self.CROP, self.CROP)
        if self.full is None:
            text = "unreadable" if self.failed else "loading…"
            p.drawText(r_full, Qt.AlignmentFlag.AlignCenter, text)
        else:
            target = _fit(self.full.size(), r_full)
            p.drawImage(target, self.full)
            if self.box is not None:
                s = target.width() / max(1, self.full.width())
                x0, y0, x1, y1 = self.box
                p.setPen(QPen(QColor(255, 40, 40), 2))
                p.drawRect(
                    QRectF(target.x() + x0 * s, target.y() + y0 * s, (x1 - x0) * s, (y1 - y0) * s)
                )
        if self.crop is not None:
            p.drawImage(_fit(self.crop.size(), r_crop), self.crop)
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(QRect(4, 6 + self.FULL, self.width() - 8, 16), Qt.AlignmentFlag.AlignLeft,
                   f"{self.example.value:.4g}  {Path(self.example.rel).name}")  # fmt: skip
        p.end()


def _fit(size: QSize, rect: QRect) -> QRect:
    """``size`` scaled into ``rect`` keeping its aspect ratio, centred."""
    s = min(rect.width() / max(1, size.width()), rect.height() / max(1, size.height()))
    w, h = max(1, round(size.width() * s)), max(1, round(size.height() * s))
    return QRect(rect.x() + (rect.width() - w) // 2, rect.y() + (rect.height() - h) // 2, w, h)


class HistogramWidget(QWidget):
    """The unit's objective values over the folder as bars; the render's value as a red line."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.edges: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.value: float | None = None
        self.setMinimumSize(180, 56)

    def set_histogram(self, view: Any | None, value: float | None = None) -> None:
        self.edges = None if view is None or not view.count else np.asarray(view.edges, float)
        self.counts = None if self.edges is None else np.asarray(view.counts, float)
        self.value = value
        self.update()

    def marker_x(self) -> float | None:
        """Where the render's value is drawn, in widget pixels (clamped to the axis)."""
        if self.edges is None or self.value is None or not math.isfinite(self.value):
            return None
        lo, hi = float(self.edges[0]), float(self.edges[-1])
        f = 0.5 if hi <= lo else (self.value - lo) / (hi - lo)
        return 2 + min(max(f, 0.0), 1.0) * (self.width() - 4)

    def paintEvent(self, e: Any) -> None:
        p = QPainter(self)
        if self.edges is None or self.counts is None:
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "no histogram")
            p.end()
            return
        w, h = self.width() - 4, self.height() - 14
        lo, hi = float(self.edges[0]), float(self.edges[-1])
        span = (hi - lo) or 1.0
        top = float(self.counts.max()) or 1.0
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(120, 150, 180))
        for i, c in enumerate(self.counts):
            x0 = 2 + (self.edges[i] - lo) / span * w
            x1 = 2 + (self.edges[i + 1] - lo) / span * w
            bh = c / top * h
            p.drawRect(QRectF(x0, 2 + h - bh, max(x1 - x0 - 0.5, 0.5), bh))
        x = self.marker_x()
        if x is not None:
            p.setPen(QPen(QColor(220, 30, 30), 2))
            p.drawLine(QPointF(x, 0), QPointF(x, h + 2))
        p.setPen(self.palette().color(self.foregroundRole()))
        p.drawText(QRect(2, h + 2, w, 12), Qt.AlignmentFlag.AlignLeft, f"{lo:.3g}")
        p.drawText(QRect(2, h + 2, w, 12), Qt.AlignmentFlag.AlignRight, f"{hi:.3g}")
        p.end()


class ExamplesPanel(QWidget):
    """One unit's dataset examples (see the module docstring).

    ``show_unit(examples, render_value=...)`` shows a ``UnitExamples``; images are decoded through
    the runner and a newer ``show_unit`` makes older results be dropped.
    """

    open_requested = Signal(object)  # Path of the example's image
    loaded = Signal()  # every tile of the current unit has its images

    COLUMNS = 3

    def __init__(self, runner: JobRunner, parent: QWidget | None = None, *,
                 open_externally: bool = True) -> None:  # fmt: skip
        super().__init__(parent)
        self.runner = runner
        self.examples: Any = None
        self.tiles: list[ExampleTile] = []
        self._generation = 0
        self.title = QLabel()
        self.title.setWordWrap(True)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.histogram = HistogramWidget()
        self.hist_text = QLabel()
        self.hist_text.setWordWrap(True)
        self.top_label, self.bottom_label = (
            QLabel("<b>Most excited</b>"),
            QLabel("<b>Least excited</b>"),
        )
        self.top_grid, self.bottom_grid = QGridLayout(), QGridLayout()
        body = QWidget()
        lay = QVBoxLayout(body)
        for w in (self.title, self.status, self.histogram, self.hist_text, self.top_label):
            lay.addWidget(w)
        lay.addLayout(self.top_grid)
        lay.addWidget(self.bottom_label)
        lay.addLayout(self.bottom_grid)
        lay.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(body)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(scroll)
        if open_externally:
            self.open_requested.connect(open_in_viewer)
        self.clear("Choose a dataset (an image folder) to see the images each unit responds to.")

    def clear(self, message: str = "") -> None:
        self._generation += 1
        self.examples = None
        self._set_tiles([], [])
        self.title.setText("")
        self.status.setText(message)
        self.histogram.set_histogram(None)
        self.hist_text.setText("")
        self.top_label.hide()
        self.bottom_label.hide()

    def show_unit(
        self, examples: Any, *, render_value: float | None = None, title: str = ""
    ) -> None:
        """Show ``examples`` (a ``UnitExamples``), with ``render_value`` marked (the value of the
        selected render, in the same measure: the unit's objective)."""
        if examples is None:
            self.clear()
            return
        self._generation += 1
        gen = self._generation
        self.examples = examples
        self.title.setText(title or f"<b>{examples.layer}:{examples.unit}</b>")
        self.status.setText(f"{examples.count:,} images in {examples.root}")
        self.histogram.set_histogram(examples.histogram, render_value)
        self.hist_text.setText(self._histogram_text(examples, render_value))
        self._set_tiles(examples.top, examples.bottom)
        self.top_label.setVisible(bool(examples.top))
        self.bottom_label.setVisible(bool(examples.bottom))
        wanted = [t.example for t in self.tiles]
        root = examples.root

        def load() -> list[Any]:
            from fvdesk.core.dataset.export import Crops

            crops = Crops()
            return [crops.get(root, ex) for ex in wanted]

        self.runner.call(load, lambda images: self._on_images(gen, images),
                         lambda msg: self._on_failed(gen, msg))  # fmt: skip

    @staticmethod
    def _histogram_text(ux: Any, value: float | None) -> str:
        h = ux.histogram
        if not h.count:
            return ""
        what = "channel mean" if ux.measure == "channel" else ux.measure
        text = (
            f"{what} over the images: median {h.percentile(50):.3g}, 99th percentile "
            f"{h.percentile(99):.3g}, max {h.maximum:.3g}."
        )
        if value is not None and math.isfinite(value):
            text += f" The render ({value:.3g}) is above {percent_text(ux.fraction_below(value))} of them."
        return text

    def _set_tiles(self, top: Sequence[Any], bottom: Sequence[Any]) -> None:
        for t in self.tiles:
            t.setParent(None)
            t.deleteLater()
        self.tiles = []
        for grid, examples in ((self.top_grid, top), (self.bottom_grid, bottom)):
            for i, ex in enumerate(examples):
                tile = ExampleTile(ex)
                tile.activated.connect(self._activate)
                grid.addWidget(tile, i // self.COLUMNS, i % self.COLUMNS)
                self.tiles.append(tile)

    def _activate(self, example: Any) -> None:
        if self.examples is not None:
            self.open_requested.emit(self.examples.root / example.rel)

    def _on_images(self, gen: int, images: list[Any]) -> None:
        if gen != self._generation:
            return  # another unit is shown by now
        for tile, im in zip(self.tiles, images, strict=False):
            tile.set_images(im)
        self.loaded.emit()

    def _on_failed(self, gen: int, message: str) -> None:
        if gen == self._generation:
            self.status.setText(message)


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
        r = option.rect  # type: ignore[attr-defined]
        x = r.x() + 160
        if crops is None:
            p.drawText(QRect(x, r.y(), 200, r.height()), Qt.AlignmentFlag.AlignVCenter, "loading…")
            return
        for img in crops:
            p.drawImage(_fit(img.size(), QRect(x, r.y() + 4, self.CROP, self.CROP)), img)
            x += self.CROP + 4

    def initStyleOption(
        self, option: QStyleOptionViewItem, index: QModelIndex | QPersistentModelIndex
    ) -> None:
        super().initStyleOption(option, index)
        option.rect = QRect(option.rect.x(), option.rect.y(), 156, option.rect.height())  # type: ignore[attr-defined]
        option.displayAlignment = Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter  # type: ignore[attr-defined]


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
            labels: Callable[[int], str | None] | None = None) -> None:  # fmt: skip
        """Run the dataset pass for ``layer`` (cached passes return at once), then show it."""
        from fvdesk.core.optim.jobs import ExamplesJob, Job

        self.cancel()
        self._generation += 1
        gen = self._generation
        spec = ExamplesJob(choice.root, (layer,), top=max(choice.top, 1), bottom=choice.bottom)
        job = Job.for_model(model, spec)
        self.label.setText(f"{layer}: reading {choice.root} …")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel_button.show()
        label_fn = labels or (lambda u: model.graph.unit_label(layer, u, model.labels))
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
            from fvdesk.core.dataset.export import Crops

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


# ------------------------------------------------------------------------------------------------
# Choosing the dataset
# ------------------------------------------------------------------------------------------------
class DatasetDialog(QDialog):
    """Choose the image folder for a model (see the module docstring).  ``choice()`` is the
    result after ``exec()``: a ``DatasetChoice``, or ``None`` when the user chose no dataset."""

    scanned = Signal(str)  # the folder summary shown (for tests and status bars)

    def __init__(self, runner: JobRunner, choice: DatasetChoice | None = None, *,
                 model_sha256: str | None = None, parent: QWidget | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.setWindowTitle("Dataset")
        self.runner = runner
        self.sha = model_sha256
        self._cleared = False
        self._scan_gen = 0
        self.folder = QLineEdit(choice.root if choice else "")
        self.folder.setPlaceholderText("a folder of images (searched recursively)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.folder, 1)
        row.addWidget(browse)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.top = QSpinBox()
        self.top.setRange(1, 256)
        self.top.setValue(choice.top if choice else 9)
        self.top.setToolTip("How many of the most exciting images each unit shows.")
        self.bottom = QSpinBox()
        self.bottom.setRange(0, 256)
        self.bottom.setValue(choice.bottom if choice else 9)
        self.bottom.setToolTip("How many of the least exciting images each unit shows (0: none).")
        self.colours = QCheckBox("Estimate the colour decorrelation from these images")
        self.colours.setChecked(bool(choice and choice.colours))
        self.colours.setToolTip(
            "Renders then decorrelate colours with this folder's colour statistics instead of "
            "ImageNet's; the matrix is recorded in every render's provenance."
        )
        self.cache_label = QLabel("")
        self.clear_button = QPushButton("Clear cache")
        self.clear_button.clicked.connect(self._clear_cache)
        cache_row = QHBoxLayout()
        cache_row.addWidget(self.cache_label, 1)
        cache_row.addWidget(self.clear_button)
        form = QFormLayout()
        form.addRow("Folder", row)
        form.addRow("", self.summary)
        form.addRow("Top examples", self.top)
        form.addRow("Bottom examples", self.bottom)
        form.addRow("", self.colours)
        form.addRow("Cache", cache_row)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.none_button = self.buttons.addButton(
            "No dataset", QDialogButtonBox.ButtonRole.ResetRole
        )
        self.none_button.clicked.connect(self._no_dataset)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.buttons)
        self.folder.textChanged.connect(self._rescan)
        self._rescan()
        self._refresh_cache()

    def choice(self) -> DatasetChoice | None:
        if self._cleared or not self.folder.text().strip():
            return None
        return DatasetChoice(self.folder.text().strip(), self.top.value(), self.bottom.value(),
                             self.colours.isChecked())  # fmt: skip

    def _browse(self) -> None:
        start = self.folder.text() or str(Path.home())
        chosen = QFileDialog.getExistingDirectory(self, "Image folder", start)
        if chosen:
            self.folder.setText(chosen)

    def _no_dataset(self) -> None:
        self._cleared = True
        self.accept()

    def _ok(self, enabled: bool) -> None:
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setEnabled(enabled)

    def _rescan(self) -> None:
        from fvdesk.core.dataset.folder import scan_folder

        self._scan_gen += 1
        gen = self._scan_gen
        text = self.folder.text().strip()
        self._ok(False)
        if not text:
            self._show_summary(gen, "")
            return
        self.summary.setText("Reading the folder…")

        def scan() -> tuple[str, int]:
            s = scan_folder(text)
            other = f", {len(s.other):,} other files" if s.other else ""
            return f"{len(s.images):,} images{other}.", len(s.images)

        self.runner.call(scan, lambda r: self._show_summary(gen, r[0], ok=r[1] > 0),
                         lambda msg: self._show_summary(gen, msg))  # fmt: skip

    def _show_summary(self, gen: int, message: str, *, ok: bool = False) -> None:
        if gen != self._scan_gen:
            return
        self.summary.setText(message)
        self._ok(ok)
        self.scanned.emit(message)

    def _refresh_cache(self) -> None:
        from fvdesk.core.dataset.cache import cache_size, format_bytes

        sha = self.sha

        def sizes() -> str:
            total = cache_size()
            mine = f"{format_bytes(cache_size(sha))} for this model, " if sha else ""
            return f"{mine}{format_bytes(total)} in all"

        self.runner.call(sizes, self.cache_label.setText, self.cache_label.setText)

    def _clear_cache(self) -> None:
        from fvdesk.core.dataset.cache import clear_cache

        sha = self.sha
        self.clear_button.setEnabled(False)

        def done(_freed: object) -> None:
            self.clear_button.setEnabled(True)
            self._refresh_cache()

        self.runner.call(lambda: clear_cache(sha), done, self.cache_label.setText)
