"""The main window: layer tree (left), tiled canvases (centre), render settings (right).

The window owns no model code.  Loading and gallery I/O run as ``BackgroundCall``s, renders on
the ``RenderQueue``'s worker thread; the window turns their signals into tiles, status text and
dialogs.  Every user-visible failure goes through ``show_error`` (one place to patch in tests).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from PySide6.QtCore import QModelIndex, QPoint, Qt, QTimer, Signal
from PySide6.QtGui import (
    QAction,
    QCloseEvent,
    QDragEnterEvent,
    QDropEvent,
    QGuiApplication,
    QIcon,
    QKeySequence,
    QShortcut,
)
from PySide6.QtWidgets import (
    QAbstractItemView,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QSlider,
    QToolBar,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from fvdesk.gui.qt_about import AboutDialog
from fvdesk.gui.qt_actions import (
    SUBMENU_DOCKS,
    SUBMENU_RECENT,
    ShortcutsDialog,
    build_actions,
    build_menus,
)
from fvdesk.gui.qt_layer_model import LayerFilterProxy, LayerTreeModel, RowRef, format_shape
from fvdesk.gui.qt_prefs import Prefs
from fvdesk.gui.qt_settings import (
    RenderSettingsPanel,
    split_values,
    to_render_settings,
)
from fvdesk.gui.qt_tiles import (
    CANCELLED,
    DEFAULT_TILE,
    DONE,
    FAILED,
    MAX_TILE,
    MIN_TILE,
    QUEUED,
    RUNNING,
    Tile,
    TileModel,
    TileView,
    ZoomDialog,
    caption_layer,
    to_qimage,
)
from fvdesk.gui.qt_worker import BackgroundCall, CombinationTerm, JobOutcome, RenderJob, RenderQueue

log = logging.getLogger(__name__)

APP_NAME = "fvdesk"
EMPTY_CANVAS = (
    "Double-click a unit in the layer tree to render it.\n"
    "Right-click a layer to render its first units, all of them, or DeepDream.\n"
    "Drop an .onnx file here to open another model."
)


def app_icon() -> QIcon:
    """The fvdesk icon: the SVG, or the PNG where Qt's SVG plugin is missing (frozen builds)."""
    from fvdesk.core.resources import resource_path

    icon = QIcon()
    for name in ("fvdesk.svg", "fvdesk.png"):
        path = resource_path("icons", name)
        if path.is_file():
            icon = QIcon(str(path))
            if not icon.pixmap(32, 32).isNull():
                break
    return icon


class MainWindow(QMainWindow):
    """fvdesk's single window."""

    model_changed = Signal(object)  # LoadedModel or None
    load_failed = Signal(str)
    gallery_saved = Signal(str)
    gallery_opened = Signal(str)
    jobs_idle = Signal()

    def __init__(self, prefs: Prefs | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("fvdeskMainWindow")
        self.prefs = prefs if prefs is not None else Prefs()
        self.model: Any = None  # LoadedModel
        self.labels_file = ""
        self.preprocessing: Any = None  # the choice for the open model (applied per job)
        self.errors: list[tuple[str, str]] = []  # (title, message) of every error shown
        self._loading: BackgroundCall | None = None
        self._saving: BackgroundCall | None = None
        self._job_tiles: dict[int, dict[tuple[int, int], int]] = {}
        self._jobs: dict[int, RenderJob] = {}
        self._batch_total = 0  # images in the jobs since the queue was last idle
        self._batch_jobs: set[int] = set()
        self._combination: list[CombinationTerm] = []
        self._zooms: list[ZoomDialog] = []
        self._closing = False
        self._engine_ready = False

        self.setWindowTitle(APP_NAME)
        self.setWindowIcon(app_icon())
        self.setAcceptDrops(True)
        self.setDockOptions(
            QMainWindow.DockOption.AnimatedDocks | QMainWindow.DockOption.AllowTabbedDocks
        )

        self.actions_by_key = build_actions(self)
        self.menus = build_menus(self.menuBar(), self.actions_by_key)
        self._build_toolbar()
        self._build_canvas()
        self._build_tree_dock()
        self._build_settings_dock()
        self._build_log_dock()
        self._build_status_bar()
        self._connect_actions()

        self.queue = RenderQueue(self)
        self.queue.job_started.connect(self._on_job_started)
        self.queue.job_event.connect(self._on_job_event)
        self.queue.job_finished.connect(self._on_job_finished)
        self.queue.job_failed.connect(self._on_job_failed)
        self.queue.job_dropped.connect(self._on_job_dropped)

        self._save_timer = QTimer(self)
        self._save_timer.setSingleShot(True)
        self._save_timer.setInterval(400)
        self._save_timer.timeout.connect(self._persist_settings)
        self._default_state = self.saveState()
        self._restore_prefs()
        self._update_enabled()

    # ==========================================================================================
    # construction
    # ==========================================================================================
    def _build_toolbar(self) -> None:
        tb = QToolBar("Main", self)
        tb.setObjectName("mainToolBar")
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        tb.setMovable(False)
        from fvdesk.gui.qt_actions import ACTIONS

        for spec in ACTIONS:
            if spec.toolbar:
                tb.addAction(self.actions_by_key[spec.key])
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, tb)
        self.toolbar = tb

    def _build_canvas(self) -> None:
        self.tiles = TileModel(self)
        self.tile_view = TileView(self.tiles)
        self.tile_view.empty_text = EMPTY_CANVAS
        self.tile_view.zoom_requested.connect(self.zoom_tile)
        self.tile_view.customContextMenuRequested.connect(self._tile_menu)
        self.tiles.tiles_changed.connect(self._update_counts)
        self.tiles.tiles_changed.connect(self._update_enabled)

        # combination bar: visible while terms are pending
        self.combo_bar = QWidget()
        self.combo_bar.setObjectName("combinationBar")
        cb = QHBoxLayout(self.combo_bar)
        cb.setContentsMargins(6, 2, 6, 2)
        self.combo_label = QLabel()
        self.combo_label.setObjectName("combinationLabel")
        render = QToolButton()
        render.setDefaultAction(self.actions_by_key["render_combination"])
        clear = QToolButton()
        clear.setDefaultAction(self.actions_by_key["clear_combination"])
        cb.addWidget(QLabel("<b>Combination:</b>"))
        cb.addWidget(self.combo_label, 1)
        cb.addWidget(render)
        cb.addWidget(clear)
        self.combo_bar.setVisible(False)

        header = QWidget()
        hl = QHBoxLayout(header)
        hl.setContentsMargins(6, 2, 6, 2)
        self.counts_label = QLabel()
        self.counts_label.setObjectName("tileCounts")
        self.size_slider = QSlider(Qt.Orientation.Horizontal)
        self.size_slider.setObjectName("tileSizeSlider")
        self.size_slider.setRange(MIN_TILE, MAX_TILE)
        self.size_slider.setValue(DEFAULT_TILE)
        self.size_slider.setFixedWidth(160)
        self.size_slider.setToolTip("Tile size (Ctrl+wheel over the tiles)")
        self.size_slider.valueChanged.connect(self.tile_view.set_tile_size)
        self.tile_view.tile_size_changed.connect(self._on_tile_size)
        hl.addWidget(self.counts_label, 1)
        hl.addWidget(QLabel("Tile size"))
        hl.addWidget(self.size_slider)

        central = QWidget()
        v = QVBoxLayout(central)
        v.setContentsMargins(0, 0, 0, 0)
        v.setSpacing(0)
        v.addWidget(header)
        v.addWidget(self.combo_bar)
        v.addWidget(self.tile_view, 1)
        self.setCentralWidget(central)

    def _build_tree_dock(self) -> None:
        self.tree_model = LayerTreeModel(parent=self)
        self.tree_proxy = LayerFilterProxy(self)
        self.tree_proxy.setSourceModel(self.tree_model)
        self.filter_edit = QLineEdit()
        self.filter_edit.setObjectName("layerFilter")
        self.filter_edit.setPlaceholderText("Filter layers by name or op type (Ctrl+F)")
        self.filter_edit.setClearButtonEnabled(True)
        self._filter_timer = QTimer(self)
        self._filter_timer.setSingleShot(True)
        self._filter_timer.setInterval(150)
        self._filter_timer.timeout.connect(self._apply_filter)
        self.filter_edit.textChanged.connect(lambda _t: self._filter_timer.start())
        self.filter_edit.returnPressed.connect(self._apply_filter)

        tree = QTreeView()
        tree.setObjectName("layerTree")
        tree.setModel(self.tree_proxy)
        tree.setUniformRowHeights(True)
        tree.setExpandsOnDoubleClick(False)
        tree.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        tree.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        tree.setAlternatingRowColors(True)
        tree.setAllColumnsShowFocus(True)
        tree.customContextMenuRequested.connect(self._tree_menu)
        tree.doubleClicked.connect(self._on_tree_double_click)
        tree.selectionModel().selectionChanged.connect(lambda *_: self._on_tree_selection())
        header = tree.header()
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(36)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for col in (1, 2, 3):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
        fm = tree.fontMetrics()
        tree.setIndentation(fm.horizontalAdvance("MM"))
        header.resizeSection(1, fm.horizontalAdvance("MaxPool") + 14)
        header.resizeSection(2, fm.horizontalAdvance("64×112×112") + 10)
        header.resizeSection(3, fm.horizontalAdvance("Chan.") + 12)
        for key in (Qt.Key.Key_Return, Qt.Key.Key_Enter):  # Enter renders, like a double-click
            QShortcut(
                QKeySequence(key),
                tree,
                self.render_selection,
                context=Qt.ShortcutContext.WidgetShortcut,
            )
        self.tree = tree

        self.layer_info = QLabel()
        self.layer_info.setObjectName("layerInfo")
        self.layer_info.setWordWrap(True)
        self.layer_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.layer_info.setMinimumHeight(40)

        body = QWidget()
        v = QVBoxLayout(body)
        v.setContentsMargins(4, 4, 4, 4)
        v.addWidget(self.filter_edit)
        v.addWidget(tree, 1)
        v.addWidget(self.layer_info)
        dock = QDockWidget("Layers", self)
        dock.setObjectName("layersDock")
        dock.setWidget(body)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        self.tree_dock = dock

    def _build_settings_dock(self) -> None:
        self.settings_panel = RenderSettingsPanel()
        self.settings_panel.changed.connect(self._save_timer_start)
        self.settings_panel.preprocessing_chosen.connect(self.choose_preprocessing)
        self.settings_panel.labels_file_chosen.connect(self.choose_labels_file)
        self.settings_panel.browse_labels_requested.connect(self._browse_labels)
        dock = QDockWidget("Render Settings", self)
        dock.setObjectName("settingsDock")
        dock.setWidget(self.settings_panel)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        self.settings_dock = dock

    def _build_log_dock(self) -> None:
        self.log_view = QPlainTextEdit()
        self.log_view.setObjectName("messages")
        self.log_view.setReadOnly(True)
        self.log_view.setMaximumBlockCount(2000)
        self.log_view.setPlaceholderText("Messages from loading and rendering appear here.")
        dock = QDockWidget("Messages", self)
        dock.setObjectName("messagesDock")
        dock.setWidget(self.log_view)
        self.addDockWidget(Qt.DockWidgetArea.BottomDockWidgetArea, dock)
        self.log_dock = dock

    def _build_status_bar(self) -> None:
        sb = self.statusBar()
        self.load_progress = QProgressBar()
        self.load_progress.setObjectName("loadProgress")
        self.load_progress.setRange(0, 1000)
        self.load_progress.setFixedWidth(160)
        self.load_progress.setVisible(False)
        self.job_label = QLabel("idle")
        self.job_label.setObjectName("jobLabel")
        self.job_progress = QProgressBar()
        self.job_progress.setObjectName("jobProgress")
        self.job_progress.setRange(0, 1000)
        self.job_progress.setFixedWidth(180)
        self.job_progress.setTextVisible(True)
        self.job_progress.setVisible(False)
        self.cancel_button = QToolButton()
        self.cancel_button.setObjectName("cancelButton")
        self.cancel_button.setDefaultAction(self.actions_by_key["cancel"])
        self.cancel_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonIconOnly)
        self.device_label = QLabel("no model")
        self.device_label.setObjectName("deviceLabel")
        self.parity_label = QLabel("")
        self.parity_label.setObjectName("parityLabel")
        # permanent: showMessage() hides normal status bar widgets, and loading shows messages
        sb.addPermanentWidget(self.load_progress)
        sb.addPermanentWidget(self.job_label)
        sb.addPermanentWidget(self.job_progress)
        sb.addPermanentWidget(self.cancel_button)
        sb.addPermanentWidget(_separator())
        sb.addPermanentWidget(self.device_label)
        sb.addPermanentWidget(_separator())
        sb.addPermanentWidget(self.parity_label)

    def _connect_actions(self) -> None:
        a = self.actions_by_key
        a["open"].triggered.connect(self.open_dialog)
        a["open_demo"].triggered.connect(self.open_demo)
        a["open_gallery"].triggered.connect(self.open_gallery_dialog)
        a["save_gallery"].triggered.connect(self.save_gallery_dialog)
        a["close_model"].triggered.connect(self.close_model)
        a["quit"].triggered.connect(self.close)
        a["quit"].setMenuRole(QAction.MenuRole.QuitRole)
        a["find"].triggered.connect(self._focus_filter)
        a["select_all"].triggered.connect(self.tile_view.selectAll)
        a["remove_tiles"].triggered.connect(self.remove_selected_tiles)
        a["clear_tiles"].triggered.connect(self.clear_tiles)
        a["render_selected"].triggered.connect(self.render_selection)
        a["render_facets"].triggered.connect(lambda: self._render_selected_unit(facets=True))
        a["render_negative"].triggered.connect(lambda: self._render_selected_unit(negative=True))
        a["render_first"].triggered.connect(lambda: self._render_selected_layer("first"))
        a["render_all"].triggered.connect(lambda: self._render_selected_layer("all"))
        a["deepdream"].triggered.connect(lambda: self._render_selected_layer("deepdream"))
        a["add_combination"].triggered.connect(self._add_selected_to_combination)
        a["render_combination"].triggered.connect(self.render_combination)
        a["clear_combination"].triggered.connect(self.clear_combination)
        a["cancel"].triggered.connect(self.cancel_current)
        a["cancel_all"].triggered.connect(self.cancel_all)
        a["zoom_tile"].triggered.connect(self._zoom_current)
        a["bigger_tiles"].triggered.connect(
            lambda: self.size_slider.setValue(round(self.size_slider.value() * 1.25))
        )
        a["smaller_tiles"].triggered.connect(
            lambda: self.size_slider.setValue(round(self.size_slider.value() / 1.25))
        )
        a["reset_layout"].triggered.connect(self.reset_layout)
        a["shortcuts"].triggered.connect(self.show_shortcuts)
        a["about"].triggered.connect(self.show_about)
        a["about"].setMenuRole(QAction.MenuRole.AboutRole)

        recent = self.menus[SUBMENU_RECENT]
        recent.aboutToShow.connect(self._fill_recent_menu)
        self._fill_recent_menu()
        docks = self.menus[SUBMENU_DOCKS]
        for dock in (self.tree_dock, self.settings_dock, self.log_dock):
            docks.addAction(dock.toggleViewAction())
        docks.addAction(self.toolbar.toggleViewAction())

    # ==========================================================================================
    # preferences
    # ==========================================================================================
    def _restore_prefs(self) -> None:
        geometry = self.prefs.geometry()
        if geometry is None or not self.restoreGeometry(geometry):
            self.resize(1440, 900)
        state = self.prefs.state()
        if state is None or not self.restoreState(state):
            self._default_dock_sizes()
        values = {
            **self.prefs.render_settings(),
            **{f"ui:{k}": v for k, v in self.prefs.ui_values().items()},
        }
        if values:
            self.settings_panel.set_values(values)
        size = self.prefs.ui_values().get("tile_size")
        if isinstance(size, int):
            self.size_slider.setValue(size)

    def _save_timer_start(self) -> None:
        self._save_timer.start()

    def _persist_settings(self) -> None:
        render, ui = split_values(self.settings_panel.values())
        ui["tile_size"] = self.tile_view.tile_size()
        self.prefs.save_render_settings(render)
        self.prefs.save_ui_values(ui)

    def _on_tile_size(self, px: int) -> None:
        if self.size_slider.value() != px:
            self.size_slider.setValue(px)
        self._save_timer.start()

    def _default_dock_sizes(self) -> None:
        self.resizeDocks([self.log_dock], [110], Qt.Orientation.Vertical)
        self.resizeDocks(
            [self.tree_dock, self.settings_dock], [400, 320], Qt.Orientation.Horizontal
        )

    def reset_layout(self) -> None:
        self.restoreState(self._default_state)
        self._default_dock_sizes()
        for dock in (self.tree_dock, self.settings_dock, self.log_dock):
            dock.setVisible(True)
            dock.setFloating(False)

    # ==========================================================================================
    # logging and errors
    # ==========================================================================================
    def log_message(self, text: str, *, status: bool = False) -> None:
        stamp = time.strftime("%H:%M:%S")
        self.log_view.appendPlainText(f"{stamp}  {text}")
        if status:
            self.statusBar().showMessage(text, 6000)

    def show_error(self, title: str, message: str) -> None:
        """The one place errors reach the user (tests patch ``QMessageBox.critical``)."""
        self.errors.append((title, message))
        self.log_message(f"{title}: {message}")
        if not self._closing:
            QMessageBox.critical(self, title, message)

    # ==========================================================================================
    # models
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
        """Load ``path`` off the GUI thread; the current model stays open until it succeeds."""
        path = Path(path)
        if self._loading is not None:
            self._loading.discard()
        device_pref = str(self.settings_panel.value("device") or "auto")

        def job(progress: Callable[[float, str], None]) -> Any:
            from fvdesk.core.device import pick_device
            from fvdesk.core.errors import FvdeskError
            from fvdesk.core.model.loader import load_model

            try:
                device = pick_device(device_pref)
            except FvdeskError as exc:  # e.g. a saved "cuda:1" on a machine without it
                progress(0.0, f"{exc} Using the default device.")
                device = pick_device("auto")
            t0 = time.perf_counter()
            model = load_model(path, device=device, progress=progress)
            return model, time.perf_counter() - t0

        call = BackgroundCall(job, name="fvdesk-load")
        call.progress.connect(self._on_load_progress)
        call.done.connect(lambda value, call=call: self._on_loaded(call, path, value))
        call.failed.connect(
            lambda message, exc, call=call: self._on_load_failed(call, path, message)
        )
        self._loading = call
        self.load_progress.setValue(0)
        self.load_progress.setVisible(True)
        self.load_progress.setFormat(f"Loading {path.name}")
        self.statusBar().showMessage(f"Loading {path.name}…")
        self.log_message(f"Opening {path}")
        self._update_enabled()
        call.start()

    def is_loading(self) -> bool:
        return self._loading is not None

    def _on_load_progress(self, fraction: float, message: str) -> None:
        if self._loading is None:
            return
        self.load_progress.setValue(round(1000 * fraction))
        self.load_progress.setToolTip(message)
        self.statusBar().showMessage(message)

    def _finish_loading(self, call: BackgroundCall) -> bool:
        """True when ``call`` is the load still wanted (not discarded by a newer one)."""
        if call.discarded or call is not self._loading:
            return False
        self._loading = None
        self.load_progress.setVisible(False)
        self.statusBar().clearMessage()
        return True

    def _on_loaded(self, call: BackgroundCall, path: Path, value: Any) -> None:
        if not self._finish_loading(call):
            return
        model, seconds = value
        self.set_model(model)
        self.prefs.add_recent(path)
        self.log_message(
            f"Loaded {model.name} in {seconds:.1f} s: {len(model.graph)} layers, input {model.input.channels}×{model.input.height}×{model.input.width} {model.input.layout}.",
            status=True,
        )
        for note in getattr(model, "canonicalization", []) or []:
            self.log_message(f"Graph repair: {note}")
        for w in getattr(model, "warnings", []) or []:
            self.log_message(f"Warning: {w}")
        if getattr(model, "status_text", None):  # partially converted: which node stopped it
            self.log_message(model.status_text, status=True)
        if model.preprocessing.source == "default":
            self.log_message(
                f"{model.name} does not say how its input was preprocessed; using the "
                f"'{model.preprocessing.preset}' preset. Check it in Render Settings > Model."
            )
        self._update_enabled()

    def _on_load_failed(self, call: BackgroundCall, path: Path, message: str) -> None:
        if not self._finish_loading(call):
            return
        self._update_enabled()
        self.load_failed.emit(message)
        self.show_error("Cannot Open Model", message)

    def set_model(self, model: Any) -> None:
        """Show ``model`` (or nothing): tree, settings, title, status.  Renders of the previous
        model are cancelled; its finished tiles stay on the canvas."""
        if self.model is not None and model is not self.model:
            self.queue.cancel_all()
        self.model = model
        self.preprocessing = model.preprocessing if model is not None else None
        self.labels_file = ""
        self._combination.clear()
        self._update_combination()
        if model is None:
            self.tree_model.set_graph(None)
            self.settings_panel.show_model(None)
            self.setWindowTitle(APP_NAME)
            self.device_label.setText("no model")
            self.parity_label.setText("")
            self.parity_label.setToolTip("")
            self.layer_info.setText("")
            self.tile_view.empty_text = "Open a model (Ctrl+O) or drop an .onnx file here."
        else:
            self._init_engine()
            self.tree_model.set_graph(model.graph, model.labels)
            self._expand_default()
            self._show_model_settings()
            self.setWindowTitle(f"{model.name} — {APP_NAME}")
            self.setWindowFilePath(str(model.path))
            self._show_device()
            self._show_parity()
            self.tile_view.empty_text = EMPTY_CANVAS
        self.tile_view.viewport().update()
        self._update_enabled()
        self.model_changed.emit(model)

    def close_model(self) -> None:
        if self._loading is not None:
            self._loading.discard()
            self._finish_loading(self._loading)
        self.set_model(None)

    def _init_engine(self) -> None:
        """First model: the engine's defaults and this machine's devices (torch is loaded now)."""
        if self._engine_ready:
            return
        self._engine_ready = True
        import torch

        devices = [("auto", "auto (GPU if available)"), ("cpu", "CPU")]
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                devices.append((f"cuda:{i}", f"cuda:{i} — {torch.cuda.get_device_name(i)}"))
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            devices.append(("mps", "Apple GPU (MPS)"))
        self.settings_panel.set_devices(devices)

    def _show_model_settings(self) -> None:
        m = self.model
        self.settings_panel.show_model(
            self.preprocessing or m.preprocessing,
            labels_count=len(m.labels or []),
            labels_source=getattr(m, "labels_source", ""),
            labels_file=self.labels_file,
        )

    def _show_device(self) -> None:
        from fvdesk.core.device import describe_device

        text = describe_device(self.model.device)
        self.device_label.setText(text)
        self.device_label.setToolTip(f"Renders run on {text}")

    def _show_parity(self) -> None:
        p = self.model.parity
        if p is None:
            self.parity_label.setText("parity not checked")
            self.parity_label.setToolTip("The conversion was not compared with onnxruntime.")
            self.parity_label.setStyleSheet("")
            return
        flag = "" if p.ok else " ⚠ above tolerance"
        self.parity_label.setText(f"parity {p.max_abs_diff:.1e}{flag}")
        self.parity_label.setToolTip(
            f"Converted torch model vs onnxruntime: {p.describe()}; tolerance {p.tolerance:g}."
            + ("" if p.ok else "\nRenders may not reflect what the ONNX model computes.")
        )
        self.parity_label.setStyleSheet("" if p.ok else "color: #c62828; font-weight: bold;")

    def _expand_default(self) -> None:
        """Open the groups of the first levels so a fresh model shows its structure (never a
        layer's units: that would fetch them)."""
        self.tree.collapseAll()
        depth = 2 if self.tree_model.node_count() <= 200 else 0
        stack = [(QModelIndex(), 0)]
        while stack:
            parent, level = stack.pop()
            for r in range(self.tree_proxy.rowCount(parent)):
                idx = self.tree_proxy.index(r, 0, parent)
                ref = self.ref_at(idx)
                if ref is not None and ref.kind == "group":
                    self.tree.expand(idx)
                    if level < depth:
                        stack.append((idx, level + 1))

    # -- preprocessing and labels -------------------------------------------------------------
    def choose_preprocessing(self, name: str) -> None:
        if self.model is None:
            return
        from fvdesk.core.errors import FvdeskError
        from fvdesk.core.model.preprocessing import preset
        from fvdesk.core.model.sidecar import save_sidecar

        # The model object is only changed on the render thread, between jobs: each job
        # carries the preprocessing chosen when it was queued.
        pre = preset(name, source="user")
        self.preprocessing = pre
        if self._is_embedded(self.model.path):
            self.log_message(f"Preprocessing set to {pre.describe()} for this session.")
        else:
            try:
                save_sidecar(self.model.path, preprocessing=pre)
                self.log_message(
                    f"Preprocessing set to {pre.describe()}; remembered next to {self.model.name}."
                )
            except (OSError, FvdeskError) as exc:  # save_sidecar raises ConfigError
                self.log_message(f"Preprocessing set to {pre.describe()} (not remembered: {exc}).")
        self._show_model_settings()

    @staticmethod
    def _is_embedded(path: Path) -> bool:
        """Files shipped inside fvdesk (the demo model) never get a sidecar written beside them."""
        from fvdesk.core.resources import resources_dir

        try:
            Path(path).resolve().relative_to(resources_dir().resolve())
        except ValueError:
            return False
        return True

    def _browse_labels(self) -> None:
        start = str(self.model.path.parent) if self.model else ""
        path, _ = QFileDialog.getOpenFileName(
            self, "Choose Labels File", start, "Labels (*.txt *.json);;All files (*)"
        )
        if path:
            self.choose_labels_file(path)

    def choose_labels_file(self, path: str) -> None:
        if self.model is None:
            return
        from fvdesk.core.errors import FvdeskError

        if not path:
            self.log_message(
                "Labels: the choice is kept in the sidecar; reopen the model to use its own labels."
            )
            return
        try:
            persist = not self._is_embedded(self.model.path)
            try:
                labels = self.model.set_labels(path, persist=persist)
            except (OSError, FvdeskError) as exc:  # e.g. the sidecar cannot be written
                labels = self.model.set_labels(path, persist=False)  # raises if unreadable
                if persist:
                    self.log_message(f"Labels from {path} are not remembered: {exc}")
        except FvdeskError as exc:
            self.show_error("Cannot Use Labels File", str(exc))
            return
        self.labels_file = path
        self.tree_model.set_labels(labels)
        self._show_model_settings()
        self.log_message(f"{len(labels)} labels from {path}.")

    # ==========================================================================================
    # tree
    # ==========================================================================================
    def _apply_filter(self) -> None:
        self._filter_timer.stop()
        text = self.filter_edit.text()
        self.tree_proxy.set_needle(text)
        if text.strip():
            self._expand_groups()
        else:
            self._expand_default()

    def _expand_groups(self, limit: int = 5000) -> None:
        """Open every group that survived the filter so the matches show (never a layer's
        units: expanding those would fetch them)."""
        stack, seen = [QModelIndex()], 0
        while stack and seen < limit:
            parent = stack.pop()
            for r in range(self.tree_proxy.rowCount(parent)):
                idx = self.tree_proxy.index(r, 0, parent)
                ref = self.ref_at(idx)
                seen += 1
                if ref is not None and ref.kind == "group":
                    self.tree.expand(idx)
                    stack.append(idx)

    def _focus_filter(self) -> None:
        self.tree_dock.show()
        self.tree_dock.raise_()
        self.filter_edit.setFocus()
        self.filter_edit.selectAll()

    def ref_at(self, proxy_index: QModelIndex) -> RowRef | None:
        return self.tree_model.ref(self.tree_proxy.mapToSource(proxy_index))

    def selected_refs(self) -> list[RowRef]:
        rows = self.tree.selectionModel().selectedRows(0)
        refs = [self.ref_at(i) for i in rows]
        if not refs and self.tree.currentIndex().isValid():
            refs = [self.ref_at(self.tree.currentIndex())]
        return [r for r in refs if r is not None]

    def _on_tree_double_click(self, index: QModelIndex) -> None:
        ref = self.ref_at(index)
        if ref is None:
            return
        if ref.kind == "unit":
            self.render_units(ref.layer.name, [ref.unit])
        else:
            self.tree.setExpanded(
                index.siblingAtColumn(0), not self.tree.isExpanded(index.siblingAtColumn(0))
            )

    def _on_tree_selection(self) -> None:
        refs = self.selected_refs()
        self._update_enabled()
        if not refs or refs[0].layer is None:
            self.layer_info.setText(f"{len(refs)} selected" if len(refs) > 1 else "")
            return
        layer = refs[0].layer
        logits = (
            " · <b>logits</b>" if self.model and self.model.graph.logits_name == layer.name else ""
        )
        units = f"{layer.channels} {'classes' if logits else 'units'}"
        extra = ""
        if refs[0].kind == "unit":
            label = self.tree_model.unit_label(layer, refs[0].unit)
            extra = f"<br>unit {refs[0].unit}" + (f": <b>{label}</b>" if label else "")
        self.layer_info.setText(
            f"<b>{layer.name}</b><br>{layer.op} · {format_shape(layer.shape)} · {layer.kind} · {units}{logits}{extra}"
        )

    def _tree_menu(self, pos: QPoint) -> None:
        index = self.tree.indexAt(pos)
        ref = self.ref_at(index) if index.isValid() else None
        if ref is None or ref.layer is None or self.model is None:
            return
        layer = ref.layer
        menu = QMenu(self)
        ui = split_values(self.settings_panel.values())[1]
        if ref.kind == "unit":
            label = self.tree_model.unit_label(layer, ref.unit)
            name = f"{layer.name}:{ref.unit}" + (f" ({label})" if label else "")
            menu.addSection(_elide(name, 60))
            menu.addAction("Render", lambda: self.render_units(layer.name, [ref.unit])).setShortcut(
                QKeySequence("Ctrl+R")
            )
            menu.addAction(
                f"Render {ui['facets']} Diverse Facets",
                lambda: self.render_units(layer.name, [ref.unit], facets=int(ui["facets"])),
            )
            menu.addAction(
                "Render Negative", lambda: self.render_units(layer.name, [ref.unit], negative=True)
            )
            if self.model.graph.logits_name == layer.name:
                other = "prob" if ui["class_kind"] == "logit" else "logit"
                menu.addAction(
                    f"Render as {'Probability' if other == 'prob' else 'Logit'}",
                    lambda: self.render_units(layer.name, [ref.unit], kind=other),
                )
            menu.addSeparator()
            menu.addAction(
                "Add to Combination", lambda: self.add_to_combination(layer.name, ref.unit, 1.0)
            )
            menu.addAction(
                "Subtract in Combination",
                lambda: self.add_to_combination(layer.name, ref.unit, -1.0),
            )
        else:
            n = self.tree_model.units_of(layer)
            first = min(int(ui["first_n"]), n)
            menu.addSection(_elide(layer.name, 60))
            menu.addAction(
                f"Render First {first} Units", lambda: self.render_layer(layer.name, first)
            ).setEnabled(n > 0)
            menu.addAction(
                f"Render All {n} Units (batched)", lambda: self.render_layer(layer.name, n)
            ).setEnabled(n > 0)
            dd = menu.addAction("DeepDream", lambda: self.render_deepdream(layer.name))
            dd.setEnabled(layer.kind == "feature")
            menu.addSeparator()
            menu.addAction(
                "Copy Layer Name", lambda: QGuiApplication.clipboard().setText(layer.name)
            )
        menu.exec(self.tree.viewport().mapToGlobal(pos))

    # ==========================================================================================
    # render requests
    # ==========================================================================================
    def unit_kind(self, layer_name: str) -> str:
        """The objective for units of ``layer_name``: channel, neuron, or the class objective."""
        self.model.graph[layer_name]  # unknown names raise a RenderError with suggestions
        if self.model.graph.logits_name == layer_name:
            return str(split_values(self.settings_panel.values())[1]["class_kind"])
        return "channel"  # the channel mean; on a vector layer, the element itself

    def render_units(
        self,
        layer_name: str,
        units: list[int],
        *,
        negative: bool = False,
        facets: int = 1,
        kind: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> RenderJob | None:
        """Queue one job for ``units`` of a layer; one tile per unit and facet.

        ``overrides`` replace dock settings for this job only (e.g. another seed)."""
        if self.model is None or not units:
            return None
        kind = kind or self.unit_kind(layer_name)
        layer = self.model.graph[layer_name]
        short = _short_layer(layer_name)
        title = (
            f"{short}:{units[0]}" if len(units) == 1 else f"{short} units {units[0]}–{units[-1]}"
        )
        if facets > 1:
            title += f" ×{facets} facets"
        if negative:
            title += " (negative)"
        tiles = []
        for u in units:
            for f in range(max(1, facets)):
                tiles.append(
                    Tile(
                        layer=layer_name,
                        unit=u,
                        kind=kind,
                        caption=f"{short}:{u}",
                        label=self.tree_model.unit_label(layer, u),
                        facet=f,
                        negative=negative,
                    )
                )
        return self._submit(
            layer_name,
            units,
            kind,
            tiles,
            title=title,
            negative=negative,
            facets=facets,
            overrides=overrides,
        )

    def render_layer(self, layer_name: str, count: int) -> RenderJob | None:
        return self.render_units(layer_name, list(range(count)))

    def render_deepdream(
        self, layer_name: str, overrides: dict[str, Any] | None = None
    ) -> RenderJob | None:
        if self.model is None:
            return None
        short = _short_layer(layer_name)
        tile = Tile(layer=layer_name, unit=-1, kind="deepdream", caption=short, label="DeepDream")
        return self._submit(
            layer_name,
            [0],
            "deepdream",
            [tile],
            title=f"DeepDream {short}",
            overrides=overrides,
        )

    def _submit(
        self,
        layer: str,
        units: list[int],
        kind: str,
        tiles: list[Tile],
        *,
        title: str,
        negative: bool = False,
        facets: int = 1,
        terms: list[CombinationTerm] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> RenderJob | None:
        try:
            settings = to_render_settings(self.settings_panel.values())
            if overrides:
                settings = replace(settings, **overrides)
        except Exception as exc:  # noqa: BLE001 - engine missing or settings rejected
            from fvdesk.gui.qt_worker import error_text

            self.show_error("Cannot Render", error_text(exc))
            return None
        pre = self.preprocessing
        job = RenderJob(
            model=self.model,
            layer=layer,
            units=list(units),
            kind=kind,
            settings=settings,
            negative=negative,
            facets=facets,
            terms=list(terms or []),
            preprocessing=pre,
            title=title,
        )
        settings_dict = settings.to_dict()
        keys: dict[tuple[int, int], int] = {}
        for t in tiles:
            t.job_id = job.id
            t.settings = settings_dict
            t.model_name = self.model.name
            t.model_sha = self.model.sha256
            t.model_file = self.model.name
            t.steps = int(getattr(settings, "steps", 0))
            keys[(t.unit, t.facet)] = t.id
        self.tiles.add(tiles)
        self.tile_view.scrollTo(self.tiles.index_of(tiles[0].id))
        self._job_tiles[job.id] = keys
        self._jobs[job.id] = job
        self._batch_jobs.add(job.id)
        self._batch_total += len(tiles)
        self.queue.submit(job)
        self.log_message(f"Queued {title} ({len(tiles)} image{'s' if len(tiles) != 1 else ''}).")
        self._update_progress()
        self._update_enabled()
        return job

    def render_selection(self) -> None:
        """Ctrl+R: selected units (grouped per layer), or the first N units of selected layers."""
        by_layer: dict[str, list[int]] = {}
        layers: list[str] = []
        for ref in self.selected_refs():
            if ref.kind == "unit":
                by_layer.setdefault(ref.layer.name, []).append(ref.unit)
            elif ref.kind == "layer":
                layers.append(ref.layer.name)
        for name, units in by_layer.items():
            self.render_units(name, sorted(set(units)))
        n = int(split_values(self.settings_panel.values())[1]["first_n"])
        for name in layers:
            self.render_layer(name, min(n, self.tree_model.units_of(self.model.graph[name])))

    def _render_selected_unit(self, *, negative: bool = False, facets: bool = False) -> None:
        ui = split_values(self.settings_panel.values())[1]
        for ref in self.selected_refs():
            if ref.kind == "unit":
                self.render_units(
                    ref.layer.name,
                    [ref.unit],
                    negative=negative,
                    facets=int(ui["facets"]) if facets else 1,
                )

    def _render_selected_layer(self, what: str) -> None:
        ui = split_values(self.settings_panel.values())[1]
        seen = set()
        for ref in self.selected_refs():
            if ref.layer is None or ref.layer.name in seen:
                continue
            seen.add(ref.layer.name)
            n = self.tree_model.units_of(ref.layer)
            if what == "deepdream":
                self.render_deepdream(ref.layer.name)
            elif what == "first":
                self.render_layer(ref.layer.name, min(int(ui["first_n"]), n))
            else:
                self.render_layer(ref.layer.name, n)

    # -- combination --------------------------------------------------------------------------
    def add_to_combination(self, layer: str, unit: int, weight: float = 1.0) -> None:
        label = self.tree_model.unit_label(self.model.graph[layer], unit) if self.model else None
        for t in self._combination:
            if t.layer == layer and t.unit == unit:
                t.weight += weight
                break
        else:
            kind = self.unit_kind(layer) if self.model else "channel"
            self._combination.append(CombinationTerm(layer, unit, weight, label, kind))
        self._combination = [t for t in self._combination if t.weight != 0]
        self._update_combination()

    def _add_selected_to_combination(self) -> None:
        for ref in self.selected_refs():
            if ref.kind == "unit":
                self.add_to_combination(ref.layer.name, ref.unit)

    def combination(self) -> list[CombinationTerm]:
        return list(self._combination)

    def clear_combination(self) -> None:
        self._combination.clear()
        self._update_combination()

    def render_combination(self) -> RenderJob | None:
        if self.model is None or not self._combination:
            return None
        terms = [replace(t) for t in self._combination]
        caption = " ".join(
            f"{_short_layer(t.layer)}:{t.unit}"
            if i == 0 and t.weight == 1
            else CombinationTerm(_short_layer(t.layer), t.unit, t.weight).caption()
            for i, t in enumerate(terms)
        )
        tile = Tile(
            layer=terms[0].layer,
            unit=-1,
            kind="combination",
            caption=caption,
            label=" + ".join(t.label for t in terms if t.label) or None,
        )
        job = self._submit(
            terms[0].layer,
            [t.unit for t in terms],
            "combination",
            [tile],
            title=f"combination {caption}",
            terms=terms,
        )
        if job is not None:
            self.clear_combination()
        return job

    def _update_combination(self) -> None:
        terms = self._combination
        self.combo_bar.setVisible(bool(terms))
        text = " ".join(
            CombinationTerm(_short_layer(t.layer), t.unit, t.weight).caption() for t in terms
        ).lstrip("+ ")
        self.combo_label.setText(text)
        self.combo_label.setToolTip(
            "\n".join(
                f"{t.weight:+g} × {t.layer}:{t.unit}" + (f" ({t.label})" if t.label else "")
                for t in terms
            )
        )
        self._update_enabled()

    # ==========================================================================================
    # render events -> tiles
    # ==========================================================================================
    def _tile_for(self, job: RenderJob, unit: int, facet: int = 0) -> Tile | None:
        keys = self._job_tiles.get(job.id, {})
        if job.kind in ("deepdream", "combination"):
            unit = -1
        tid = keys.get((unit, facet))
        return self.tiles.tile(tid) if tid is not None else None

    def _job_tile_list(self, job: RenderJob) -> list[Tile]:
        return [
            t
            for t in (self.tiles.tile(i) for i in self._job_tiles.get(job.id, {}).values())
            if t is not None
        ]

    def _event_tiles(self, job: RenderJob, ev: Any) -> list[Tile | None]:
        """The tiles of a batch event, in batch order.

        The engine's events name each image's unit and facet (``units``, ``facets``); events
        without ``facets`` are laid out unit-major from ``offset``.
        """
        offset = int(getattr(ev, "offset", 0) or 0)
        facets = max(1, int(job.facets))
        n = len(ev.values) if getattr(ev, "values", None) is not None else len(ev.images)
        if job.kind == "combination":
            return [self._tile_for(job, -1, offset + i) for i in range(n)]
        if job.kind == "deepdream":
            return [self._tile_for(job, -1, (offset + i) % facets) for i in range(n)]
        units = list(getattr(ev, "units", None) or [])
        image_facets = getattr(ev, "facets", None) or [(offset + i) % facets for i in range(n)]
        return [
            self._tile_for(job, int(u), int(f))
            for u, f in zip(units[:n], image_facets[:n], strict=False)
        ]

    def _on_job_started(self, job: RenderJob) -> None:
        self.job_label.setText(f"Rendering {job.title}")
        if job.kind in ("deepdream", "combination"):
            for t in self._job_tile_list(job):
                t.state = RUNNING
                self.tiles.update(t, state_changed=True)
        self._update_progress()
        self._update_enabled()

    def _on_job_event(self, job: RenderJob, ev: Any) -> None:
        name = type(ev).__name__
        if name == "StepEvent":
            values = getattr(ev, "values", None)
            for i, t in enumerate(self._event_tiles(job, ev)):
                if t is None or t.state in (DONE, FAILED, CANCELLED):
                    continue
                changed = t.state != RUNNING
                t.state = RUNNING
                t.step = int(ev.step)  # the engine counts steps from 1
                t.steps = int(ev.steps)
                if values is not None and i < len(values):
                    t.value = float(values[i])
                self.tiles.update(t, state_changed=changed)
            self._update_progress(ev)
        elif name == "PreviewEvent":
            images = ev.images
            for i, t in enumerate(self._event_tiles(job, ev)):
                if t is None or i >= len(images) or t.state in (DONE, FAILED, CANCELLED):
                    continue
                t.state = RUNNING
                t.image = to_qimage(images[i])
                self.tiles.update(t)
        elif name == "UnitDoneEvent":
            self._apply_result(job, ev.result)
        elif name == "NoticeEvent":
            self.log_message(f"{job.title}: {ev.message}", status=True)

    def _apply_result(self, job: RenderJob, result: Any) -> None:
        unit = -1 if job.kind in ("deepdream", "combination") else int(result.unit)
        t = self._tile_for(job, unit, int(getattr(result, "facet", 0) or 0))
        if t is None:
            return
        t.result = result
        t.array = result.image
        t.image = to_qimage(result.image)
        t.value = float(result.value) if result.value is not None else None
        t.dead = bool(getattr(result, "dead", False))
        if getattr(result, "label", None) and not t.label and job.kind != "combination":
            t.label = result.label
        planned = int(getattr(job.settings, "steps", 0) or 0)
        done_steps = int(getattr(result, "steps", planned) or 0)
        t.step = done_steps
        if job.cancel.is_set() and done_steps < planned:
            # The engine hands back the image as it was when cancelled: keep it, but say so.
            t.state = CANCELLED
            t.message = f"cancelled at step {done_steps} of {planned}"
        else:
            t.steps = done_steps or planned
            t.state = DONE
        self.tiles.update(t, state_changed=True)

    def _close_job(self, job: RenderJob, state: str, message: str = "") -> None:
        for t in self._job_tile_list(job):
            if t.state in (QUEUED, RUNNING):
                t.state = state
                t.message = message
                self.tiles.update(t, state_changed=True)
        self._job_tiles.pop(job.id, None)
        self._jobs.pop(job.id, None)
        if not self.queue.busy():
            self._batch_jobs.clear()
            self._batch_total = 0
            self.job_label.setText("idle")
            self.jobs_idle.emit()
        self._update_progress()
        self._update_enabled()

    def _on_job_finished(self, job: RenderJob, outcome: JobOutcome) -> None:
        for r in outcome.results:
            t = self._tile_for(
                job,
                -1 if job.kind in ("deepdream", "combination") else int(r.unit),
                int(getattr(r, "facet", 0) or 0),
            )
            if t is not None and t.state in (QUEUED, RUNNING):
                self._apply_result(job, r)
        if self.model is not None and job.model is self.model:
            self._show_device()  # the engine moves the model to the settings' device
        if outcome.cancelled:
            self.log_message(f"Cancelled {job.title} after {outcome.seconds:.1f} s.", status=True)
        else:
            self.log_message(f"Finished {job.title} in {outcome.seconds:.1f} s.", status=True)
        self._close_job(job, CANCELLED, "")

    def _on_job_failed(self, job: RenderJob, message: str) -> None:
        self.log_message(f"Failed {job.title}: {message}", status=True)
        self._close_job(job, FAILED, message)

    def _on_job_dropped(self, job: RenderJob) -> None:
        self._close_job(job, CANCELLED)

    def _update_progress(self, ev: Any = None) -> None:
        busy = self.queue.busy()
        self.job_progress.setVisible(busy)
        if not busy or not self._batch_total:
            return
        done = 0.0
        active = [t for t in self.tiles.tiles() if t.job_id in self._batch_jobs]
        for t in active:
            if t.finished:
                done += 1
            elif t.state == RUNNING:
                done += t.progress
        finished_jobs_tiles = self._batch_total - len(active)  # tiles removed or from closed jobs
        frac = (done + max(0, finished_jobs_tiles)) / max(1, self._batch_total)
        self.job_progress.setValue(round(1000 * min(1.0, frac)))
        queued = len(self.queue.pending())
        self.job_progress.setFormat(f"{100 * frac:.0f}%")
        job = self.queue.current
        if job is not None:
            step = f" · step {ev.step}/{ev.steps}" if ev is not None and hasattr(ev, "step") else ""
            more = f" · {queued} queued" if queued else ""
            self.job_label.setText(f"Rendering {job.title}{step}{more}")

    def _update_counts(self) -> None:
        c = self.tiles.counts()
        total = sum(c.values())
        if not total:
            self.counts_label.setText("No tiles")
            return
        parts = [f"{total} tile{'s' if total != 1 else ''}"]
        parts += [f"{n} {state}" for state, n in c.items() if n]
        self.counts_label.setText(" · ".join(parts))

    # ==========================================================================================
    # cancel, tiles
    # ==========================================================================================
    def cancel_current(self) -> None:
        job = self.queue.cancel_current()
        if job is not None:
            self.statusBar().showMessage(f"Cancelling {job.title}…", 3000)

    def cancel_all(self) -> None:
        self.queue.cancel_all()

    def remove_selected_tiles(self) -> None:
        self.remove_tiles({t.id for t in self.tile_view.selected_tiles()})

    def remove_tiles(self, ids: set[int]) -> None:
        """Remove tiles; a job whose tiles are all gone is cancelled."""
        removed = self.tiles.remove(ids)
        for job_id in {t.job_id for t in removed}:
            job = self._jobs.get(job_id)
            if job is not None and not self._job_tile_list(job):
                self.queue.cancel_job(job)

    def clear_tiles(self) -> None:
        self.queue.cancel_all()
        self.tiles.clear()

    def zoom_tile(self, tile_id: int) -> ZoomDialog | None:
        if self.tiles.tile(tile_id) is None:
            return None
        dlg = ZoomDialog(self.tiles, tile_id, self)
        dlg.destroyed.connect(lambda *_: self._zooms.remove(dlg) if dlg in self._zooms else None)
        self._zooms.append(dlg)
        dlg.show()
        return dlg

    def _zoom_current(self) -> None:
        t = self.tile_view.current_tile()
        if t is not None:
            self.zoom_tile(t.id)

    def _tile_menu(self, pos: QPoint) -> None:
        idx = self.tile_view.indexAt(pos)
        tile = self.tiles.tile_at(idx) if idx.isValid() else None
        menu = QMenu(self)
        if tile is not None:
            if not self.tile_view.selectionModel().isSelected(idx):
                self.tile_view.setCurrentIndex(idx)
            menu.addSection(_elide(tile.title(), 50))
            menu.addAction(self.actions_by_key["zoom_tile"])
            copy = menu.addAction(
                "Copy Image", lambda: QGuiApplication.clipboard().setImage(tile.image)
            )
            copy.setEnabled(tile.image is not None)
            if tile.state in (QUEUED, RUNNING):
                job = self._jobs.get(tile.job_id)
                if job is not None:
                    menu.addAction("Cancel This Job", lambda: self.queue.cancel_job(job))
            if self.model is not None and tile.layer in self.model.graph:
                menu.addAction(
                    "Show in Layer Tree", lambda: self.select_in_tree(tile.layer, tile.unit)
                )
                if tile.finished and tile.kind not in ("combination",):
                    menu.addAction("Render Again (new seed)", lambda: self._render_again(tile))
            menu.addSeparator()
            menu.addAction(self.actions_by_key["remove_tiles"])
        menu.addAction(self.actions_by_key["select_all"])
        menu.addAction(self.actions_by_key["clear_tiles"])
        menu.exec(self.tile_view.viewport().mapToGlobal(pos))

    def _render_again(self, tile: Tile) -> None:
        """The same unit with the next seed (the dock's seed is left alone)."""
        seed = int(tile.settings.get("seed", self.settings_panel.value("seed")) or 0) + 1
        overrides = {"seed": seed % (2**31 - 1)}
        if tile.kind == "deepdream":
            self.render_deepdream(tile.layer, overrides=overrides)
        else:
            self.render_units(
                tile.layer,
                [tile.unit],
                negative=tile.negative,
                kind=tile.kind,
                overrides=overrides,
            )

    def select_in_tree(self, layer: str, unit: int = -1) -> None:
        src = (
            self.tree_model.index_of_unit(layer, unit)
            if unit >= 0
            else self.tree_model.index_of_layer(layer)
        )
        if not src.isValid():
            return
        if self.filter_edit.text():
            self.filter_edit.clear()
            self._apply_filter()
        idx = self.tree_proxy.mapFromSource(src)
        self.tree.scrollTo(idx)
        self.tree.setCurrentIndex(idx)

    # ==========================================================================================
    # galleries
    # ==========================================================================================
    def savable_tiles(self) -> list[Tile]:
        """Finished tiles of one model: the current one, else the model of the first tile."""
        done = [t for t in self.tiles.tiles() if t.state == DONE and t.array is not None]
        if not done:
            return []
        sha = self.model.sha256 if self.model is not None else done[0].model_sha
        if not any(t.model_sha == sha for t in done):
            sha = done[0].model_sha
        return [t for t in done if t.model_sha == sha]

    def save_gallery_dialog(self) -> None:
        if not self.savable_tiles():
            self.show_error("Nothing to Save", "There are no finished tiles to save as a gallery.")
            return
        start = self.prefs.last_dir("gallery") or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Save Gallery in Folder", start)
        if folder:
            self.prefs.set_last_dir("gallery", str(Path(folder).parent))
            self.save_gallery(folder)

    def save_gallery(self, folder: str | Path) -> BackgroundCall | None:
        """Write the finished tiles through the core's gallery writer, on a background thread."""
        tiles = self.savable_tiles()
        if not tiles:
            return None
        from fvdesk.core.output.gallery import GalleryItem, ModelInfo

        first = tiles[0]
        model_info = ModelInfo(first.model_file or first.model_name, first.model_sha)
        device = self.device_label.text()
        pairs = []
        used: set[tuple] = set()
        for t in tiles:
            if isinstance(t.result, GalleryItem):
                item = t.result
            else:
                item = GalleryItem.from_result(t.result, t.settings, device=device)
            # A gallery keeps one image per key: a unit rendered twice (another seed, another
            # combination on the same layer) is kept as the next facet instead of replaced.
            while item.key in used:
                item = replace(item, facet=item.facet + 1, file="")
            used.add(item.key)
            pairs.append((item, t.array))
        title = f"{model_info.file} — {len(pairs)} renders"
        folder = Path(folder)

        def job(progress: Callable[[float, str], None]) -> Path:
            from fvdesk.core.output.gallery import write_gallery

            progress(0.0, f"Saving {len(pairs)} images to {folder}")
            return write_gallery(folder, model_info, pairs, title=title, device=device)

        call = BackgroundCall(job, name="fvdesk-save")
        call.done.connect(lambda path: self._on_gallery_saved(path, len(pairs)))
        call.failed.connect(lambda message, exc: self._on_gallery_failed(message))
        self._saving = call
        self.statusBar().showMessage(f"Saving gallery to {folder}…")
        self._update_enabled()
        call.start()
        return call

    def _on_gallery_saved(self, path: Path, n: int) -> None:
        self._saving = None
        self._update_enabled()
        self.log_message(
            f"Saved a gallery of {n} images to {path} (index.html, contact_sheet.png, gallery.json).",
            status=True,
        )
        self.gallery_saved.emit(str(path))

    def _on_gallery_failed(self, message: str) -> None:
        self._saving = None
        self._update_enabled()
        self.show_error("Cannot Save Gallery", message)

    def open_gallery_dialog(self) -> None:
        start = self.prefs.last_dir("gallery") or str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Open Gallery Folder", start)
        if folder:
            self.open_gallery(folder)

    def open_gallery(self, folder: str | Path) -> BackgroundCall:
        """Read a saved gallery (off the GUI thread) and add its images as finished tiles."""
        folder = Path(folder)

        def job(progress: Callable[[float, str], None]) -> Any:
            from fvdesk.core.output.gallery import read_gallery

            return read_gallery(folder)

        call = BackgroundCall(job, name="fvdesk-open-gallery")
        call.done.connect(lambda value: self._on_gallery_read(folder, value))
        call.failed.connect(lambda message, exc: self.show_error("Cannot Open Gallery", message))
        call.start()
        return call

    def _on_gallery_read(self, folder: Path, value: Any) -> None:
        manifest, pairs = value
        model = manifest.get("model", {})
        tiles = []
        for item, image in pairs:
            if image is None:
                continue
            unit_part = f":{item.unit}" if item.unit >= 0 else ""
            t = Tile(
                layer=item.layer,
                unit=item.unit,
                kind=item.objective,
                caption=f"{_short_layer(item.layer)}{unit_part}",
                label=item.label,
                facet=item.facet,
                negative=item.negative,
                state=DONE,
                value=item.value,
                image=to_qimage(image),
                array=image,
                result=item,
                settings=dict(item.settings),
                model_name=str(model.get("file", "")),
                dead=item.dead,
                steps=int(item.steps or 0),
                step=int(item.steps or 0),
            )
            t.model_sha = str(model.get("sha256", ""))
            t.model_file = str(model.get("file", ""))
            tiles.append(t)
        self.tiles.add(tiles)
        self.log_message(
            f"Opened the gallery {folder}: {len(tiles)} images of {model.get('file', '?')}.",
            status=True,
        )
        self.gallery_opened.emit(str(folder))

    # ==========================================================================================
    # recent files, drag and drop
    # ==========================================================================================
    def _fill_recent_menu(self) -> None:
        menu = self.menus[SUBMENU_RECENT]
        menu.clear()
        files = self.prefs.recent_files()
        for i, f in enumerate(files):
            p = Path(f)
            text = f"&{i + 1} {p.name}" if i < 9 else p.name
            act = menu.addAction(text, lambda f=f: self._open_recent(f))
            act.setToolTip(f)
            act.setStatusTip(f)
        if files:
            menu.addSeparator()
            menu.addAction("Clear Recent", self._clear_recent)
        else:
            menu.addAction("No recent models").setEnabled(False)

    def _open_recent(self, path: str) -> None:
        if not Path(path).is_file():
            self.prefs.remove_recent(path)
            self.show_error(
                "Cannot Open Model",
                f"The model file {path} no longer exists; it was removed from the recent list.",
            )
            return
        self.open_model(path)

    def _clear_recent(self) -> None:
        self.prefs.clear_recent()

    @staticmethod
    def _dropped_paths(event: QDragEnterEvent | QDropEvent) -> list[Path]:
        md = event.mimeData()
        if not md.hasUrls():
            return []
        out = []
        for url in md.urls():
            if url.isLocalFile():
                p = Path(url.toLocalFile())
                if p.suffix.lower() == ".onnx" or (p.is_dir() and (p / "gallery.json").is_file()):
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
        models = [p for p in paths if p.suffix.lower() == ".onnx"]
        for p in paths:
            if p.is_dir():
                self.open_gallery(p)
        if models:
            self.open_model(models[-1])

    # ==========================================================================================
    # dialogs
    # ==========================================================================================
    def show_about(self) -> None:
        device = self.device_label.text() if self.model is not None else None
        AboutDialog(device, self).exec()

    def show_shortcuts(self) -> None:
        ShortcutsDialog(self).exec()

    # ==========================================================================================
    # state
    # ==========================================================================================
    def _update_enabled(self) -> None:
        a = self.actions_by_key
        has_model = self.model is not None
        refs = self.selected_refs() if has_model else []
        unit_sel = any(r.kind == "unit" for r in refs)
        layer_sel = any(r.layer is not None for r in refs)
        busy = self.queue.busy() if hasattr(self, "queue") else False
        has_tiles = self.tiles.rowCount() > 0
        a["save_gallery"].setEnabled(
            self._saving is None and any(t.state == DONE for t in self.tiles.tiles())
        )
        a["close_model"].setEnabled(has_model or self._loading is not None)
        a["render_selected"].setEnabled(has_model and (unit_sel or layer_sel))
        for key in ("render_facets", "render_negative", "add_combination"):
            a[key].setEnabled(has_model and unit_sel)
        for key in ("render_first", "render_all", "deepdream"):
            a[key].setEnabled(has_model and layer_sel)
        a["render_combination"].setEnabled(has_model and bool(self._combination))
        a["clear_combination"].setEnabled(bool(self._combination))
        a["cancel"].setEnabled(busy)
        a["cancel_all"].setEnabled(busy)
        a["remove_tiles"].setEnabled(has_tiles)
        a["clear_tiles"].setEnabled(has_tiles)
        a["select_all"].setEnabled(has_tiles)
        a["zoom_tile"].setEnabled(has_tiles)

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel renders, join the worker thread, remember the window; True when all stopped."""
        if self._closing:
            return not self.queue.thread_running()
        self._closing = True
        self._save_timer.stop()
        self._persist_settings()
        self.prefs.save_window(self.saveGeometry(), self.saveState())
        self.prefs.sync()
        if self._loading is not None:
            self._loading.discard()
        for dlg in list(self._zooms):
            dlg.close()
        stopped = self.queue.shutdown(timeout_ms)
        if not stopped:
            log.warning("the render thread did not stop within %d ms", timeout_ms)
            _orphans.append(self.queue)  # never destroy a running QThread
        return stopped

    def closeEvent(self, event: QCloseEvent) -> None:
        self.shutdown()
        event.accept()
        super().closeEvent(event)


_orphans: list[Any] = []


def _separator() -> QWidget:
    line = QLabel("|")
    line.setEnabled(False)
    return line


def _short_layer(name: str) -> str:
    return caption_layer(name)


def _elide(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n // 2 - 1] + "…" + text[-(n // 2) :]
