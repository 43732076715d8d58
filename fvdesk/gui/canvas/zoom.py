"""The zoom window: one tile at full resolution, nearest-neighbour scaled, live while it renders.

It follows the tile through the ``TileModel`` (by id), so it repaints with each preview and closes
when its tile is removed.  Save PNG writes atomically; a file that cannot be written is one
sentence (``failed``, which the window shows as its other errors), never a silent no-op.
"""

from __future__ import annotations

from PySide6.QtCore import QBuffer, QByteArray, QIODevice, QModelIndex, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QKeySequence, QPalette, QPixmap
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from fvdesk.core.fileio import atomic_write_bytes
from fvdesk.gui.canvas.tiles import RUNNING, Tile, TileModel


class ZoomDialog(QDialog):
    """One tile at full resolution, nearest-neighbour scaled, live while it still renders."""

    ZOOMS = (1, 2, 3, 4, 6, 8)

    failed = Signal(str, str)  # title, message: the image could not be saved
    scroll: QScrollArea  # type: ignore[assignment]  # shadows QWidget.scroll, never called here

    def __init__(self, model: TileModel, tile_id: int, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("zoomDialog")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, True)
        self._model = model
        self.tile_id = tile_id
        self._zoom: int | None = None  # None = fit to window
        self.image_label = QLabel()
        self.image_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Ignored)
        self.scroll = QScrollArea()
        self.scroll.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.scroll.setWidget(self.image_label)
        self.scroll.setWidgetResizable(True)
        self.scroll.setBackgroundRole(QPalette.ColorRole.Dark)
        self.scroll.setMinimumSize(300, 300)

        buttons = QHBoxLayout()
        fit = QPushButton("Fit")
        fit.clicked.connect(lambda: self.set_zoom(None))
        buttons.addWidget(fit)
        for z in self.ZOOMS:
            b = QPushButton(f"{z}×")
            b.setToolTip(f"{z} screen pixels per image pixel (nearest neighbour)")
            b.clicked.connect(lambda _=False, z=z: self.set_zoom(z))
            buttons.addWidget(b)
        buttons.addStretch(1)
        copy = QPushButton("Copy")
        copy.setToolTip("Copy the image to the clipboard")
        copy.clicked.connect(self.copy_image)
        save = QPushButton("Save PNG…")
        save.clicked.connect(self.save_image)
        buttons.addWidget(copy)
        buttons.addWidget(save)

        self.info = QFormLayout()
        self.info_labels: dict[str, QLabel] = {}
        for key in ("Unit", "Label", "State", "Objective", "Seed / steps", "Settings"):
            lab = QLabel()
            lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            lab.setWordWrap(True)
            self.info_labels[key] = lab
            self.info.addRow(key + ":", lab)
        close = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        close.rejected.connect(self.close)

        layout = QVBoxLayout(self)
        layout.addWidget(self.scroll, 1)
        layout.addLayout(buttons)
        layout.addLayout(self.info)
        layout.addWidget(close)
        for level, key in ((None, "0"), (1, "1"), (2, "2"), (4, "4"), (8, "8")):
            act = QAction(self)
            act.setShortcut(QKeySequence(key))
            act.triggered.connect(lambda _=False, z=level: self.set_zoom(z))
            self.addAction(act)
        model.dataChanged.connect(self._on_changed)
        model.rowsRemoved.connect(self._on_removed)
        model.modelReset.connect(self._on_removed)
        self.resize(640, 760)
        self.refresh()

    def tile(self) -> Tile | None:
        return self._model.tile(self.tile_id)

    def set_zoom(self, zoom: int | None) -> None:
        self._zoom = zoom
        self.scroll.setWidgetResizable(zoom is None)
        self._render_pixmap()

    def current_pixmap(self) -> QPixmap | None:
        pm = self.image_label.pixmap()
        return None if pm is None or pm.isNull() else pm

    def refresh(self) -> None:
        t = self.tile()
        if t is None:
            return
        self.setWindowTitle(f"{t.title()} — fvdesk")
        info = self.info_labels
        info["Unit"].setText(t.title() + (f"   [{t.kind}]" if t.kind else ""))
        info["Label"].setText(t.label or "—")
        info["State"].setText(
            t.state
            + (f": {t.message}" if t.message else "")
            + (f" (step {t.step}/{t.steps})" if t.state == RUNNING else "")
        )
        info["Objective"].setText(f"{t.value:.6g}" if t.value is not None else "—")
        seed = t.settings.get("seed", "—") if t.settings else "—"
        info["Seed / steps"].setText(f"{seed} / {t.steps or t.settings.get('steps', '—')}")
        keys = ("size", "param", "decorrelate", "lr", "tv", "l1", "l2", "blur_every")
        info["Settings"].setText(
            ", ".join(f"{k} {t.settings[k]}" for k in keys if k in t.settings) or "—"
        )
        self._render_pixmap()

    def _render_pixmap(self) -> None:
        t = self.tile()
        if t is None or t.image is None or t.image.isNull():
            self.image_label.setText("no image yet")
            return
        img = t.image
        if self._zoom is None:
            avail = self.scroll.viewport().size()
            z = max(1, min(avail.width() // img.width(), avail.height() // img.height()))
        else:
            z = self._zoom
        pm = QPixmap.fromImage(
            img.scaled(
                img.width() * z,
                img.height() * z,
                Qt.AspectRatioMode.IgnoreAspectRatio,
                Qt.TransformationMode.FastTransformation,
            )
        )
        self.image_label.setPixmap(pm)
        if self._zoom is not None:
            self.image_label.resize(pm.size())

    def resizeEvent(self, e) -> None:
        super().resizeEvent(e)
        if self._zoom is None:
            self._render_pixmap()

    def _on_changed(self, first: QModelIndex, last: QModelIndex) -> None:
        t = self.tile()
        if t is not None and first.row() <= self._model.index_of(self.tile_id).row() <= last.row():
            self.refresh()

    def _on_removed(self, *_: object) -> None:
        if self.tile() is None:
            self.close()

    def copy_image(self) -> None:
        t = self.tile()
        if t is not None and t.image is not None:
            QGuiApplication.clipboard().setImage(t.image)

    def save_image(self) -> None:
        t = self.tile()
        if t is None or t.image is None:
            return
        stem = (
            "".join(c if c.isalnum() or c in "-_." else "_" for c in t.caption).strip("._")
            or "tile"
        )
        path, _ = QFileDialog.getSaveFileName(
            self, "Save Image", stem + ".png", "PNG images (*.png)"
        )
        if not path:
            return
        data = QByteArray()
        buffer = QBuffer(data)
        buffer.open(QIODevice.OpenModeFlag.WriteOnly)
        t.image.save(buffer, "PNG")  # type: ignore[call-overload]  # Qt takes a str format too
        buffer.close()
        try:
            atomic_write_bytes(path, bytes(data.data()))
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            message = f"The image could not be written to {path} ({reason})."
            self.failed.emit("Cannot Save Image", message)
