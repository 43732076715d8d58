"""How the main window connects its parts: one table of controllers, wired by one loop.

Every controller (``fvdesk.gui.runtime.controller.Controller``) is listed in ``CONTROLLERS``
with the status-bar source its progress counts under and the docks that show its widgets.  The
loop in ``connect`` gives each the same wiring: messages to the log, errors to the error dialog,
progress to the status bar, its ``commands`` to the actions table, its ``enabled`` to the
actions' state, the tree's selection to ``follow_refs``; a new controller is a row here, not new
wiring code.  What is left below the loop is the window's own commands and the few links between
one feature's widgets and the shell's (the dataset examples follow the current tile).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PySide6.QtGui import QAction

from fvdesk.gui.shell.actions import SUBMENU_DOCKS, SUBMENU_RECENT, ShortcutsDialog

#: the main window (``shell.main_window.MainWindow``; not imported: it imports this module)
MainWindow = Any


@dataclass(frozen=True)
class DockSpec:
    """A dock showing one of a controller's widgets."""

    attr: str  # the window's attribute for the dock
    title: str
    name: str  # object name: the key of the saved layout
    widget: str  # the controller's attribute holding the widget
    area: str  # "left", "right" or "bottom"


@dataclass(frozen=True)
class ControllerSpec:
    attr: str  # the window's attribute holding the controller
    source: str  # whose time-left estimate its progress feeds (shell/status)
    docks: tuple[DockSpec, ...] = ()


CONTROLLERS: tuple[ControllerSpec, ...] = (
    ControllerSpec("jobs", "jobs"),
    ControllerSpec("galleries", "gallery"),
    ControllerSpec("datasets", "jobs", (
        DockSpec("examples_dock", "Dataset Examples", "examplesDock", "panel", "right"),
        DockSpec("browser_dock", "Layer Examples", "layerExamplesDock", "browser", "bottom"),
    )),
    ControllerSpec("inspect", "jobs", (
        DockSpec("inspect_dock", "Inspect Image", "inspectDock", "panel", "right"),
    )),
    ControllerSpec("article", "jobs", (
        DockSpec("combination_dock", "Combination", "combinationDock", "builder", "left"),
        DockSpec("position_dock", "Neuron Position", "positionDock", "picker", "left"),
    )),
)  # fmt: skip


def controllers(w: MainWindow) -> list[Any]:
    return [getattr(w, spec.attr) for spec in CONTROLLERS]


def add_docks(w: MainWindow) -> None:
    """The controllers' docks, in table order (set as the window's attributes)."""
    for spec in CONTROLLERS:
        ctl = getattr(w, spec.attr)
        for d in spec.docks:
            setattr(w, d.attr, w.add_dock(d.title, d.name, getattr(ctl, d.widget), d.area))


def _follower(w: MainWindow, ctl: Any) -> Callable[[], None]:
    return lambda: ctl.follow_refs(w.layers.selected_refs())


def window_commands(w: MainWindow) -> dict[str, Callable[[], Any]]:
    """The actions the window handles itself (dialogs, tiles, layout)."""
    return {
        "open": w.open_dialog, "open_demo": w.open_demo,
        "open_gallery": w.open_gallery_dialog, "save_gallery": w.save_gallery_dialog,
        "close_model": w.session.close, "quit": w.close, "find": w.focus_filter,
        "select_all": w.tile_view.selectAll, "remove_tiles": w.remove_selected_tiles,
        "atlas": w.atlas_dialog, "cancel": w.cancel_current, "zoom_tile": w.zoom_current,
        "bigger_tiles": lambda: w.canvas.scale_tiles(1.25),
        "smaller_tiles": lambda: w.canvas.scale_tiles(1 / 1.25),
        "reset_layout": w.reset_layout, "activation_atlas": w.open_activation_atlas,
        "shortcuts": lambda: ShortcutsDialog(w).exec(), "about": w.show_about,
        "dataset_spectrum": lambda: w.datasets.use_spectrum(
            w.settings_panel.widgets["maco_spectrum"].choose
        ),
    }  # fmt: skip


def connect(w: MainWindow) -> None:
    """Every connection the window makes (called once, from its constructor)."""
    commands = window_commands(w)
    for spec in CONTROLLERS:  # the one loop
        ctl = getattr(w, spec.attr)
        ctl.message.connect(lambda text, status: w.log_message(text, status=status))
        ctl.error.connect(w.show_error)
        ctl.progress.connect(lambda f, text, k=spec.source: w.status.show_progress(f, text, k))
        commands.update(ctl.commands(w.layers.selected_refs, w))
        w.layers.selection_changed.connect(_follower(w, ctl))
    a = w.actions_by_key
    for key, fn in commands.items():
        a[key].triggered.connect(fn)
    a["quit"].setMenuRole(QAction.MenuRole.QuitRole)
    a["about"].setMenuRole(QAction.MenuRole.AboutRole)
    w.menus[SUBMENU_RECENT].aboutToShow.connect(w.fill_recent_menu)
    w.fill_recent_menu()
    w.menus[SUBMENU_DOCKS].addAction(w.toolbar.toggleViewAction())
    _connect_session(w)
    _connect_views(w)


def _connect_session(w: MainWindow) -> None:
    s, st, gal = w.session, w.status, w.galleries
    s.loading.connect(st.show_loading)
    s.loading.connect(lambda name: w.log_message(f"Opening {name}"))
    s.load_progress.connect(st.show_load_progress)
    s.loaded.connect(w.on_loaded)
    s.load_failed.connect(w.on_load_failed)
    s.changed.connect(w.on_model_changed)
    s.choices_changed.connect(w.show_choices)
    s.labels_changed.connect(w.layers.set_labels)
    s.device_changed.connect(st.show_device)
    s.devices_found.connect(w.settings_panel.set_devices)
    s.message.connect(w.log_message)
    s.error.connect(w.show_error)
    w.queue.busy_changed.connect(lambda busy: busy or w.queue_idle())
    w.queue.busy_changed.connect(lambda _b: w.update_enabled())
    gal.saving_changed.connect(lambda saving: saving or st.finish("gallery"))
    gal.opened.connect(lambda _folder: st.finish("gallery"))
    gal.error.connect(lambda *_: st.finish("gallery"))
    gal.saving_changed.connect(w.on_saving_changed)
    w.article.combination_changed.connect(w.update_enabled)


def _connect_views(w: MainWindow) -> None:
    jobs, view, ds, panel = w.jobs, w.tile_view, w.datasets, w.settings_panel
    w.layers.unit_activated.connect(lambda layer, unit: jobs.render_units(layer, [unit]))
    w.layers.render_requested.connect(w.render_selection)
    w.layers.selection_changed.connect(w.update_enabled)
    w.layers.menu_requested.connect(w.tree_menu)
    view.zoom_requested.connect(w.zoom_tile)
    view.customContextMenuRequested.connect(w.tile_menu)
    view.tile_size_changed.connect(lambda _px: w.save_timer.start())
    w.tiles.tiles_changed.connect(w.update_enabled)
    panel.changed.connect(lambda: w.save_timer.start())
    panel.rejected.connect(lambda text: w.log_message(text, status=True))
    panel.preprocessing_chosen.connect(w.session.choose_preprocessing)
    panel.labels_file_chosen.connect(w.session.choose_labels_file)
    panel.browse_labels_requested.connect(w.browse_labels)
    # the dataset examples follow the current tile; their docks come up when there is news
    ds.choice_changed.connect(lambda _c: w.update_enabled())
    ds.choice_changed.connect(lambda c: c is None or w.examples_dock.raise_())
    ds.browsing.connect(lambda: w.docks.show_lazy(w.browser_dock))
    view.selectionModel().currentChanged.connect(lambda *_: ds.show_tile(view.current_tile()))
    w.tiles.tiles_changed.connect(lambda: ds.refresh(view.current_tile()))
    _connect_inspect(w)


def _connect_inspect(w: MainWindow) -> None:
    """The image inspector and the other features: "Inspect This Image" on a dataset example,
    a top unit's dataset examples, the galleries it reuses renders of and copies its images into."""
    ins, gal, ds = w.inspect, w.galleries, w.datasets
    ds.panel.inspect_requested.connect(w.inspect_image)
    ins.panel.examples_requested.connect(lambda layer, _unit: ds.browse_layer(layer))
    ins.image_opened.connect(lambda _img: w.inspect_dock.raise_())
    gal.saved.connect(ins.copy_images_into)
    gal.read.connect(lambda pairs: ins.cache.add_items(pairs))  # decoded once, by galleries
    gal.atlas_finished.connect(ins.reuse_gallery)


def update_enabled(w: MainWindow) -> None:
    """Every action's enabled state: the window's own, then each controller's."""
    has_model = w.model is not None
    refs = w.layers.selected_refs() if has_model else []
    has_tiles = w.tiles.rowCount() > 0
    enabled = {"close_model": has_model or w.session.is_loading(), "remove_tiles": has_tiles,
               "select_all": has_tiles, "zoom_tile": has_tiles, "clear_tiles": has_tiles,
               "activation_atlas": has_model}  # fmt: skip
    for ctl in controllers(w):
        enabled.update(ctl.enabled(has_model, refs))
    for key, on in enabled.items():
        w.actions_by_key[key].setEnabled(on)
    dataset = has_model and w.datasets.choice is not None
    w.settings_panel.widgets["ui:cluster_facets"].setEnabled(dataset)
