"""The main window: it assembles the widgets and menus and connects the controllers.

    ModelSession       the open model and the choices in force (runtime/session)
    JobController      requests -> core jobs -> tiles, progress (runtime/jobs)
    GalleryController  galleries and atlases (galleries/)
    DatasetController  the image folder per model, examples beside renders (dataset/)
    ArticleController  the article's figures, the combination and neuron-position docks (article/)
    RenderQueue        the one render thread every model task runs on (runtime/worker)

Widgets only display: the layer tree (tree/), the canvas (canvas/), the settings dock
(settings/) and the status bar (shell/status).  Menus and the toolbar come from the actions
table (shell/actions); the docks and their default arrangement from shell/layout; every
connection from shell/wiring.  The window owns no model code; every user-visible failure goes
through ``show_error`` (one place to patch in tests).

Extension point: a new feature adds a controller (given the session, the queue and the tiles)
and a row in ``shell/wiring.CONTROLLERS`` (its docks, its status source): one loop connects
every controller's signals, actions and docks.  New job kinds need nothing here: the job
controller's ``submit`` takes any spec.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPoint, QTimer
from PySide6.QtGui import QCloseEvent, QDragEnterEvent, QDropEvent, QShowEvent
from PySide6.QtWidgets import (
    QDockWidget,
    QFileDialog,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QWidget,
)

from fvdesk.gui.article.controller import ArticleController
from fvdesk.gui.canvas.panel import CanvasPanel
from fvdesk.gui.canvas.tile_view import TileView
from fvdesk.gui.canvas.tiles import TileModel
from fvdesk.gui.canvas.zoom import ZoomDialog
from fvdesk.gui.dataset.controller import DatasetController
from fvdesk.gui.galleries.controller import GalleryController
from fvdesk.gui.inspect.controller import InspectController, is_image_file
from fvdesk.gui.runtime.jobs import JobController
from fvdesk.gui.runtime.selection import RowRef
from fvdesk.gui.runtime.session import ModelSession
from fvdesk.gui.runtime.worker import RenderQueue
from fvdesk.gui.settings.panel import RenderSettingsPanel, split_values
from fvdesk.gui.shell import layout, wiring
from fvdesk.gui.shell.about import AboutDialog, app_icon
from fvdesk.gui.shell.actions import (
    SUBMENU_DOCKS,
    SUBMENU_RECENT,
    build_actions,
    build_menus,
)
from fvdesk.gui.shell.docks import Docks
from fvdesk.gui.shell.layout import EMPTY_CANVAS
from fvdesk.gui.shell.menus import fill_recent_menu, tile_menu, tree_menu
from fvdesk.gui.shell.prefs import Prefs
from fvdesk.gui.shell.status import StatusWidgets, load_messages
from fvdesk.gui.tree.panel import LayerTreePanel

log = logging.getLogger(__name__)

APP_NAME = "fvdesk"
NO_MODEL = "Open a model (Ctrl+O) or drop an .onnx file here."


class MainWindow(QMainWindow):
    """fvdesk's single window."""

    # set by shell/layout.py's build (declared here for the type checker)
    canvas: CanvasPanel
    tile_view: TileView
    layers: LayerTreePanel
    tree_dock: QDockWidget
    inspect_dock: QDockWidget
    log_view: QPlainTextEdit

    def __init__(self, prefs: Prefs | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("fvdeskMainWindow")
        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.setDockOptions(
            QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks
        )
        self.prefs = prefs if prefs is not None else Prefs()
        self.errors: list[tuple[str, str]] = []  # (title, message) of every error shown
        self._zooms: list[ZoomDialog] = []
        self._closing = False
        self._quit_after_save = False

        a = self.actions_by_key = build_actions(self)
        self.menus = build_menus(self.menuBar(), a)
        self.docks = Docks(self, self.menus[SUBMENU_DOCKS])
        self.queue = RenderQueue(self)
        self.tiles = TileModel(self)
        self.session = ModelSession(self)
        self.settings_panel = RenderSettingsPanel()
        collaborators = (self.session, self.queue, self.tiles, self.settings_panel.values)
        self.jobs = JobController(*collaborators, parent=self)
        self.galleries = GalleryController(*collaborators, confirm=self.ask, parent=self)
        self.datasets = DatasetController(*collaborators, prefs=self.prefs, jobs=self.jobs,
                                          galleries=self.galleries, parent=self)  # fmt: skip
        self.inspect = InspectController(*collaborators, jobs=self.jobs, prefs=self.prefs, parent=self)  # fmt: skip
        self.article = ArticleController(*collaborators, jobs=self.jobs, panel=self.settings_panel, parent=self)  # fmt: skip

        layout.build(self)  # toolbar, canvas, docks, the default arrangement
        self.status = StatusWidgets(self.statusBar(), a["cancel"])
        self.save_timer = QTimer(self)
        self.save_timer.setSingleShot(True)
        self.save_timer.setInterval(400)
        self.save_timer.timeout.connect(self._persist_settings)
        wiring.connect(self)
        self._restore_prefs()
        self.update_enabled()

    @property
    def model(self) -> Any:
        """The open ``LoadedModel`` (owned by the session)."""
        return self.session.model

    def add_dock(self, title: str, name: str, widget: QWidget, area: str) -> QDockWidget:
        """Add a dock (listed in View > Panels, kept in the saved layout)."""
        return self.docks.add(title, name, widget, area)

    # ==========================================================================================
    def open_activation_atlas(self) -> Any:
        """The activation atlas window (gui/actatlas); its builds take turns on the render queue."""
        from fvdesk.gui.actatlas.window import ActivationAtlasWindow
        from fvdesk.gui.runtime.runners import QueueRunner

        layer = next(iter(self.layers.selected_layers()), None)
        folder = self.datasets.choice.root if self.datasets.choice else None
        runner = getattr(self, "_actatlas_runner", None) or QueueRunner(self.queue, self)
        self._actatlas_runner = runner
        self._actatlas = ActivationAtlasWindow(runner, self.session,
                                               self.jobs.settings, layer=layer, folder=folder,
                                               parent=self)  # fmt: skip
        self._actatlas.show()
        return self._actatlas

    # preferences and layout
    # ==========================================================================================
    def _restore_prefs(self) -> None:
        geometry = self.prefs.geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1440, 900)
        self.docks.restore(self.prefs.state())
        ui = self.prefs.ui_values()
        values = {**self.prefs.render_settings(), **{f"ui:{k}": v for k, v in ui.items()}}
        if values:
            self.settings_panel.set_values(values)
        if isinstance(ui.get("tile_size"), int):
            self.canvas.size_slider.setValue(ui["tile_size"])

    def _persist_settings(self) -> None:
        render, ui = split_values(self.settings_panel.values())
        ui["tile_size"] = self.tile_view.tile_size()
        self.prefs.save_render_settings(render)
        self.prefs.save_ui_values(ui)

    def showEvent(self, event: QShowEvent) -> None:
        super().showEvent(event)
        self.docks.shown()

    def reset_layout(self) -> None:
        self.docks.reset()

    # ==========================================================================================
    # messages
    # ==========================================================================================
    def log_message(self, text: str, *, status: bool = False) -> None:
        self.log_view.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")
        if status:
            self.statusBar().showMessage(text, 6000)

    def show_error(self, title: str, message: str) -> None:
        """The one place errors reach the user (tests patch ``QMessageBox.critical``)."""
        self.errors.append((title, message))
        self.log_message(f"{title}: {message}")
        if not self._closing:
            QMessageBox.critical(self, title, message)

    def ask(self, title: str, text: str) -> bool:
        """A yes/no question (tests patch ``QMessageBox.question``)."""
        if self._closing:
            return False
        answer = QMessageBox.question(self, title, text)
        return answer == QMessageBox.StandardButton.Yes

    # ==========================================================================================
    # the model
    # ==========================================================================================
    def open_dialog(self) -> None:
        start = self.prefs.last_dir("model") or (str(self.model.path.parent) if self.model else "")
        path, _ = QFileDialog.getOpenFileName(
            self, "Open ONNX Model", start, "ONNX models (*.onnx);;All files (*)"
        )
        if path:
            self.prefs.set_last_dir("model", str(Path(path).parent))
            self.open_model(path)

    def open_demo(self) -> None:
        from fvdesk.core.resources import demo_model_path

        self.open_model(demo_model_path())

    def open_model(self, path: str | Path) -> None:
        """Load ``path`` off the GUI thread on the device the settings name."""
        self.session.open(path, str(self.settings_panel.value("device") or "auto"))
        self.update_enabled()

    def on_loaded(self, model: Any, seconds: float) -> None:
        self.status.hide_loading()
        self.prefs.add_recent(model.path)
        for text, status in load_messages(model, seconds):
            self.log_message(text, status=status)

    def on_load_failed(self, message: str) -> None:
        self.status.hide_loading()
        self.update_enabled()
        self.show_error("Cannot Open Model", message)

    def on_model_changed(self, model: Any) -> None:
        if not self.session.is_loading():
            self.status.hide_loading()
        self.layers.set_graph(model.graph if model else None, self.session.labels)
        self.show_choices()
        self.settings_panel.show_input(model.input if model is not None else None)
        self.status.show_model(
            model, self.session.preprocessing, self.session.preprocessing_origin()
        )
        if model is None:
            self.setWindowTitle(APP_NAME)
            self.canvas.set_empty_text(NO_MODEL)
        else:
            self.setWindowTitle(f"{model.name} — {APP_NAME}")
            self.setWindowFilePath(str(model.path))
            self.canvas.set_empty_text(EMPTY_CANVAS)
        self.update_enabled()

    def show_choices(self) -> None:
        s, m = self.session, self.session.model
        if m is None:
            self.settings_panel.show_model(None)
            return
        c = s.choices
        assert c is not None  # a model is open (checked above)
        self.settings_panel.show_model(c.preprocessing, labels_count=len(c.labels or ()),
                                       labels_source=c.labels_source, labels_file=c.labels_file)  # fmt: skip
        self.status.show_preprocessing(s.preprocessing, s.preprocessing_origin())

    def browse_labels(self) -> None:
        start = str(self.model.path.parent) if self.model else ""
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose Labels File", start, "Labels (*.txt *.json);;All files (*)"
        )
        if path:
            self.session.choose_labels_file(path)

    # ==========================================================================================
    # render requests from the selection
    # ==========================================================================================
    def render_selection(self) -> None:
        """Ctrl+R: selected units (grouped per layer), or the first N units of selected layers."""
        self.jobs.render_refs(self.layers.selected_refs())

    def queue_idle(self) -> None:
        self.status.finish("jobs")
        if not self.galleries.is_saving():  # an atlas reports as the gallery controller
            self.status.finish("gallery")

    def cancel_current(self) -> None:
        task = self.queue.cancel_current()
        if task is not None:
            self.statusBar().showMessage(f"Cancelling {task.title}…", 3000)

    def focus_filter(self) -> None:
        self.tree_dock.show()
        self.tree_dock.raise_()
        self.layers.focus_filter()

    def tree_menu(self, ref: RowRef, pos: QPoint) -> None:
        if self.model is not None:
            examples = self.datasets.browse_layer if self.datasets.choice else None
            menu = tree_menu(self, ref, self.jobs, self.article, examples)
            menu.exec(pos)
            menu.deleteLater()  # a child of the window: kept (with what it holds) otherwise

    # ==========================================================================================
    # tiles
    # ==========================================================================================
    def remove_selected_tiles(self) -> None:
        self.jobs.remove_tiles({t.id for t in self.tile_view.selected_tiles()})

    def zoom_tile(self, tile_id: int) -> ZoomDialog | None:
        if self.tiles.tile(tile_id) is None:
            return None
        dlg = ZoomDialog(self.tiles, tile_id, self)
        dlg.failed.connect(self.show_error)
        dlg.destroyed.connect(lambda *_: self._zooms.remove(dlg) if dlg in self._zooms else None)
        self._zooms.append(dlg)
        dlg.show()
        return dlg

    def zoom_current(self) -> None:
        t = self.tile_view.current_tile()
        if t is not None:
            self.zoom_tile(t.id)

    def tile_menu(self, pos: QPoint) -> None:
        idx = self.tile_view.indexAt(pos)
        tile = self.tiles.tile_at(idx) if idx.isValid() else None
        if tile is not None and not self.tile_view.selectionModel().isSelected(idx):
            self.tile_view.setCurrentIndex(idx)
        menu = tile_menu(
            self, tile, self.jobs, self.actions_by_key, self.layers.select, self.article
        )
        menu.exec(self.tile_view.viewport().mapToGlobal(pos))
        menu.deleteLater()  # it holds the tile (its images) until deleted

    # ==========================================================================================
    # galleries and atlases
    # ==========================================================================================
    def _choose_folder(self, title: str) -> str:
        start = self.prefs.last_dir("gallery") or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, title, start)
        if folder:
            self.prefs.set_last_dir("gallery", str(Path(folder).parent))
        return folder

    def save_gallery_dialog(self) -> None:
        if not self.galleries.savable_tiles():
            self.show_error("Nothing to Save", "There are no finished tiles to save as a gallery.")
            return
        folder = self._choose_folder("Save Gallery in Folder")
        if folder:
            self.galleries.save_gallery(folder)

    def open_gallery_dialog(self) -> None:
        folder = self._choose_folder("Open Gallery Folder")
        if folder:
            self.galleries.open_gallery(folder)

    def atlas_dialog(self) -> None:
        layers = self.layers.selected_layers()
        if self.model is None or not layers:
            self.show_error("Nothing to Render", "Select one or more layers in the layer tree.")
            return
        folder = self._choose_folder(f"Atlas of {len(layers)} Layers: Choose a Folder")
        if folder:
            self.galleries.start_atlas(folder, layers)

    def on_saving_changed(self, saving: bool) -> None:
        self.update_enabled()
        if not saving and self._quit_after_save:
            self.close()

    # ==========================================================================================
    # recent files, drag and drop, dialogs
    # ==========================================================================================
    def fill_recent_menu(self) -> None:
        fill_recent_menu(self.menus[SUBMENU_RECENT], self.prefs, self._open_recent)

    _fill_recent_menu = fill_recent_menu  # its name before the wiring table (tests use it)

    def _open_recent(self, path: str) -> None:
        if not Path(path).is_file():
            self.prefs.remove_recent(path)
            self.show_error(
                "Cannot Open Model",
                f"The model file {path} no longer exists; it was removed from the recent list.",
            )
            return
        self.open_model(path)

    @staticmethod
    def _dropped_paths(event: QDragEnterEvent | QDropEvent) -> list[Path]:
        md = event.mimeData()
        out = []
        for url in md.urls() if md.hasUrls() else []:
            p = Path(url.toLocalFile()) if url.isLocalFile() else None
            if p and (p.suffix.lower() == ".onnx" or (p / "gallery.json").is_file()
                      or is_image_file(p)):  # fmt: skip
                out.append(p)
        return out

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if self._dropped_paths(event):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:  # noqa: ANN001 - QDragMoveEvent
        event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        paths = self._dropped_paths(event)
        if not paths:
            event.ignore()
            return
        event.acceptProposedAction()
        for p in paths:
            if p.is_dir():
                self.galleries.open_gallery(p)
        models = [p for p in paths if p.suffix.lower() == ".onnx"]
        if models:
            self.open_model(models[-1])
        images = [p for p in paths if is_image_file(p)]
        if images and not models:
            self.inspect_image(images[-1])

    def inspect_image(self, path: str | Path) -> None:
        """Open ``path`` in the Inspect Image dock (shown once the image is ready)."""
        self.inspect_dock.show()
        self.inspect.open_image(path)

    def show_about(self) -> None:
        AboutDialog(self.session.device_text or None, self).exec()

    # ==========================================================================================
    # state and shutdown
    # ==========================================================================================
    def update_enabled(self) -> None:
        wiring.update_enabled(self)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel renders, join the render thread, remember the window; True when all stopped."""
        if self._closing:
            return not self.queue.thread_running()
        self._closing = True
        self.save_timer.stop()
        self._persist_settings()
        self.prefs.save_window(self.saveGeometry(), self.saveState())
        self.prefs.sync()
        self.session.discard_load()
        for ctl in wiring.controllers(self):
            ctl.shutdown()
        for dlg in list(self._zooms):
            dlg.close()
        stopped = self.queue.shutdown(timeout_ms)
        if not stopped:
            log.warning("the render thread did not stop within %d ms", timeout_ms)
            _orphans.append(self.queue)  # never destroy a running QThread
        return stopped

    def closeEvent(self, event: QCloseEvent) -> None:
        """Quit, but never while a gallery is being written: wait for it, saying so."""
        if self.galleries.is_saving():
            self._quit_after_save = True
            event.ignore()
            text = "Saving the gallery… fvdesk quits as soon as it is written."
            self.statusBar().showMessage(text)
            self.log_message(text)
            return
        self.shutdown()
        event.accept()
        super().closeEvent(event)


_orphans: list[Any] = []
