"""``ActivationAtlasWindow``: build a layer's activation atlas over a folder, then explore it.

The build is one core job (``ActivationAtlasJob``) handed to the app's ``JobRunner``: it runs on
the render queue, never on the GUI thread; its progress shows in the window's bar, Cancel stops
it (what is committed stays, and building again into the same folder resumes).  Tiles appear on
the map as their cells are committed.  "Open Atlas…" shows a folder built before (by the app or
``fvdesk activation-atlas``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QPixmap
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from fvdesk.gui.actatlas.view import AtlasView

CROP_SHOWN = 72


def _pixmap(path: Path, side: int, *, smooth: bool = True) -> QPixmap:
    mode = Qt.TransformationMode.SmoothTransformation if smooth else Qt.TransformationMode.FastTransformation  # fmt: skip
    return QPixmap(str(path)).scaled(side, side, Qt.AspectRatioMode.KeepAspectRatio, mode)


class CellDialog(QDialog):
    """A cell at full size with all its crops; "Render Larger" renders its direction at twice the
    atlas's canvas through the same runner."""

    def __init__(self, folder: Path, cell: dict[str, Any], render: Callable[..., Any] | None,
                 parent: QWidget | None = None) -> None:  # fmt: skip
        super().__init__(parent)
        self.setObjectName("ActivationAtlasCellDialog")
        self.setWindowTitle(f"Cell {cell['id']} ({cell['i']}, {cell['j']})")
        self.folder, self.cell = folder, cell
        lay = QVBoxLayout(self)
        self.caption = QLabel(cell.get("caption", ""))
        self.caption.setWordWrap(True)
        lay.addWidget(self.caption)
        self.image = QLabel()
        if cell.get("tile"):
            self.image.setPixmap(_pixmap(folder / cell["tile"], 384, smooth=False))
        lay.addWidget(self.image, alignment=Qt.AlignmentFlag.AlignCenter)
        crops = QGridLayout()
        for k, c in enumerate(cell.get("crops", [])):
            lab = QLabel()
            lab.setPixmap(_pixmap(folder / c["file"], 2 * CROP_SHOWN))
            lab.setToolTip(c["source"])
            crops.addWidget(lab, k // 4, k % 4)
        lay.addLayout(crops)
        self.render_button = QPushButton("Render Larger")
        self.render_button.setObjectName("ActivationAtlasCellDialog:Render")
        self.render_button.setEnabled(render is not None)
        self.render_button.clicked.connect(lambda: render and render(self))
        lay.addWidget(self.render_button)

    def show_render(self, image: Any) -> None:
        from PySide6.QtGui import QImage

        a = image.copy()
        h, w = a.shape[:2]
        qimg = QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        self.image.setPixmap(QPixmap.fromImage(qimg).scaled(384, 384))
        self.render_button.setText("Rendered at twice the size")


class ActivationAtlasWindow(QWidget):
    """The form, the map, the hovered cell's details.

    ``runner``: a ``JobRunner`` (the app's ``QueueRunner``); ``session``: what owns the model
    (``.model``, ``.job_for(spec, settings)``); ``settings()``: the render settings in force.
    """

    def __init__(self, runner: Any, session: Any, settings: Callable[[], Any], *,
                 layer: str | None = None, folder: str | None = None,
                 parent: QWidget | None = None) -> None:  # fmt: skip
        super().__init__(parent, Qt.WindowType.Window)
        self.setObjectName("ActivationAtlasWindow")
        self.setWindowTitle("Activation Atlas")
        self.runner, self.session, self.settings = runner, session, settings
        self.folder = Path()
        self.manifest: dict[str, Any] | None = None
        self._cancel: Callable[[], None] | None = None
        self._dialogs: list[CellDialog] = []

        form = QFormLayout()
        self.images = QLineEdit(folder or "")
        self.layer = QComboBox()
        model = getattr(session, "model", None)
        if model is not None:
            for lay in model.graph.layers:
                if lay.kind == "feature" and lay.spatial:
                    self.layer.addItem(lay.name)
        if layer:
            self.layer.setCurrentText(layer)
        self.out = QLineEdit()
        self.grid = QSpinBox(minimum=2, maximum=100, value=20)
        self.per_image = QSpinBox(minimum=1, maximum=4096, value=8)
        self.min_count = QSpinBox(minimum=1, maximum=10000, value=3)
        for label, w in (("Images", self.images), ("Layer", self.layer), ("Atlas folder", self.out),
                         ("Grid (N × N)", self.grid), ("Positions per image", self.per_image),
                         ("Vectors a cell needs", self.min_count)):  # fmt: skip
            form.addRow(label, w)
        buttons = QHBoxLayout()
        self.build_button = QPushButton("Build")
        self.open_button = QPushButton("Open Atlas…")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.classes = QComboBox()
        self.classes.addItem("All classes", None)
        for b in (self.build_button, self.cancel_button, self.open_button):
            buttons.addWidget(b)
        buttons.addWidget(QLabel("Class:"))
        buttons.addWidget(self.classes)
        self.progress = QProgressBar()
        self.status = QLabel("Choose a folder of images and a layer, then Build.")
        self.status.setWordWrap(True)

        self.view = AtlasView()
        self.details = QLabel("Hover a cell for its count, top units and crops.")
        self.details.setWordWrap(True)
        self.details.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.details.setMinimumWidth(220)
        self.crops = QGridLayout()
        side = QWidget()
        sl = QVBoxLayout(side)
        sl.addWidget(self.details)
        sl.addLayout(self.crops)
        sl.addStretch(1)
        split = QSplitter()
        split.addWidget(self.view)
        split.addWidget(side)
        split.setStretchFactor(0, 4)

        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.progress)
        lay.addWidget(self.status)
        lay.addWidget(split, 1)
        self.resize(1000, 800)

        self.build_button.clicked.connect(self.build)
        self.cancel_button.clicked.connect(self.cancel)
        self.open_button.clicked.connect(self._choose_atlas)
        self.classes.currentIndexChanged.connect(
            lambda _i: self.view.set_class_filter(self.classes.currentData())
        )
        self.view.hovered.connect(self.show_cell)
        self.view.activated.connect(self.open_cell)

    # -- building ---------------------------------------------------------------------------------
    def build(self) -> None:
        """Submit the atlas job (the model work runs on the runner's thread)."""
        from fvdesk.core.actatlas.spec import ActivationAtlasJob
        from fvdesk.core.errors import FvdeskError

        model = getattr(self.session, "model", None)
        if model is None:
            self.status.setText("Open a model first.")
            return
        images, out = self.images.text().strip(), self.out.text().strip()
        if not images or not out:
            self.status.setText("Choose the folder of images and the atlas folder.")
            return
        try:
            spec = ActivationAtlasJob(images, self.layer.currentText(), out, grid=self.grid.value(),
                                      per_image=self.per_image.value(),
                                      min_count=self.min_count.value())  # fmt: skip
            spec.validate(model.graph)
            job = self.session.job_for(spec, self.settings())
        except FvdeskError as e:
            self.status.setText(str(e))
            return
        self.folder = Path(out)
        self.progress.setRange(0, 0)
        self.status.setText(f"Collecting the vectors of {spec.layer}…")
        self._busy(True)
        self._cancel = self.runner.submit(
            model, job, self._on_event, self._on_done, self._on_failed
        )

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel()
            self.status.setText("Cancelling… (what is committed is kept; Build again resumes)")

    def _busy(self, busy: bool) -> None:
        self.build_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    def _on_event(self, ev: Any) -> None:
        from fvdesk.core.optim.events import NoticeEvent, ProgressEvent
        from fvdesk.core.output import actatlas as out_mod

        if isinstance(ev, ProgressEvent):
            self.progress.setRange(0, max(ev.total, 1))
            self.progress.setValue(ev.done)
            self.progress.setFormat(f"%v / %m {ev.what}")
        elif isinstance(ev, NoticeEvent):
            self.status.setText(ev.message)
        elif isinstance(ev, out_mod.AtlasLaidOut):
            self.show_folder(ev.out)
            self.progress.setRange(0, max(ev.cells, 1))
            self.progress.setValue(ev.done)
            self.progress.setFormat("%v / %m cells")
            self.status.setText(f"Rendering {ev.cells - ev.done} cells…")
        elif isinstance(ev, out_mod.CellRendered):
            self.view.tile_ready(ev.cell, ev.tile)
            self.progress.setValue(ev.done)

    def _on_done(self, result: Any) -> None:
        self._busy(False)
        self._cancel = None
        if getattr(result, "cancelled", False):
            self.status.setText(f"Cancelled; {self.folder} keeps what was committed.")
            return
        self.status.setText(f"{result.cells} cells ({result.rendered} rendered now, "
                            f"{result.skipped} already done) in {self.folder}.")  # fmt: skip
        if self.manifest is None:
            self.show_folder(self.folder)

    def _on_failed(self, message: str) -> None:
        self._busy(False)
        self._cancel = None
        self.progress.setRange(0, 1)
        self.status.setText(message)

    # -- showing ----------------------------------------------------------------------------------
    def _choose_atlas(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open Activation Atlas")
        if folder:
            self.show_folder(folder)

    def show_folder(self, folder: str | Path) -> bool:
        """Show the atlas in ``folder``; a folder that is none says so in the status line."""
        from fvdesk.core.errors import FvdeskError
        from fvdesk.core.output.actatlas import read_manifest

        try:
            manifest = read_manifest(folder)
        except FvdeskError as e:
            self.status.setText(str(e))
            return False
        self.folder, self.manifest = Path(folder), manifest
        self.view.show_atlas(folder, manifest)
        job = manifest["job"]  # the form says what the atlas shown was made of
        if self.layer.findText(job["layer"]) < 0:
            self.layer.addItem(job["layer"])
        self.layer.setCurrentText(job["layer"])
        self.images.setText(job["root"])
        self.out.setText(str(folder))
        for box, key in ((self.grid, "grid"), (self.per_image, "per_image"),
                         (self.min_count, "min_count")):  # fmt: skip
            box.setValue(int(job[key]))
        self.classes.blockSignals(True)
        self.classes.clear()
        self.classes.addItem("All classes", None)
        seen = {
            c["class"]["index"]: c["class"]["label"] for c in manifest["cells"] if c.get("class")
        }
        for k in sorted(seen):
            self.classes.addItem(seen[k], k)
        self.classes.blockSignals(False)
        return True

    def show_cell(self, cell: dict[str, Any]) -> None:
        units = ", ".join(f"{u} ({v:.2f})" for u, v in cell["top_units"][:5])
        cls = cell.get("class")
        lines = [f"<b>Cell {cell['id']}</b> ({cell['i']}, {cell['j']}): {cell['count']:,} vectors",
                 f"Top units: {units}"]  # fmt: skip
        if cls:
            lines.append(f"Supports: {cls['label']} ({cls['score']:+.2f})")
        self.details.setText("<br>".join(lines))
        while self.crops.count():
            taken = self.crops.takeAt(0)
            w = taken.widget() if taken is not None else None
            if w is not None:
                w.deleteLater()
        for k, c in enumerate(cell.get("crops", [])):
            lab = QLabel()
            lab.setPixmap(_pixmap(self.folder / c["file"], CROP_SHOWN))
            lab.setToolTip(c["source"])
            self.crops.addWidget(lab, k // 3, k % 3)

    def open_cell(self, cell: dict[str, Any]) -> CellDialog:
        d = CellDialog(self.folder, cell, self._render_larger, self)
        self._dialogs = [x for x in self._dialogs if x.isVisible()] + [d]
        d.show()
        return d

    def _render_larger(self, dialog: CellDialog) -> None:
        """The cell's direction at twice the atlas's canvas, on the runner (not the GUI thread)."""
        from dataclasses import replace

        import numpy as np

        from fvdesk.core.actatlas.build import load_vectors
        from fvdesk.core.jobs.job import DirectionJob

        model = getattr(self.session, "model", None)
        if model is None or self.manifest is None:
            return
        mean = load_vectors(self.folder)["means"][int(dialog.cell["id"])]
        spec = DirectionJob(self.manifest["job"]["layer"],
                            vectors=(tuple((mean / np.linalg.norm(mean)).tolist()),))  # fmt: skip
        from fvdesk.core.errors import FvdeskError

        size = int(self.manifest["settings"].get("size") or model.input.height)
        try:
            job = self.session.job_for(spec, replace(self.settings(), size=2 * size, batch=1))
        except FvdeskError as e:
            dialog.caption.setText(str(e))
            return
        dialog.render_button.setEnabled(False)
        dialog.render_button.setText("Rendering…")

        def done(result: Any) -> None:
            if result.results:
                dialog.show_render(result.results[0].image)

        self.runner.submit(model, job, lambda _ev: None, done, dialog.caption.setText)
