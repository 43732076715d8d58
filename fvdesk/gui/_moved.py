"""The app's old flat module names (``fvdesk.gui.qt_*``), kept importable for one release.

The app's modules moved into sub-packages by concern.  ``import fvdesk.gui.qt_tiles`` still works:
it warns (``DeprecationWarning``) and gives the module at its new path, the same module object
(``fvdesk.core._moved`` says how and why).  ``tests/gui/test_gui_layers.py`` fails on any old name used
inside the repository.
"""

from __future__ import annotations

#: old module name -> new module name
MOVED: dict[str, str] = {
    "fvdesk.gui.qt_main_window": "fvdesk.gui.shell.main_window",
    "fvdesk.gui.qt_actions": "fvdesk.gui.shell.actions",
    "fvdesk.gui.qt_menus": "fvdesk.gui.shell.menus",
    "fvdesk.gui.qt_docks": "fvdesk.gui.shell.docks",
    "fvdesk.gui.qt_about": "fvdesk.gui.shell.about",
    "fvdesk.gui.qt_prefs": "fvdesk.gui.shell.prefs",
    "fvdesk.gui.qt_status": "fvdesk.gui.shell.status",
    "fvdesk.gui.qt_worker": "fvdesk.gui.runtime.worker",
    "fvdesk.gui.qt_runners": "fvdesk.gui.runtime.runners",
    "fvdesk.gui.qt_session": "fvdesk.gui.runtime.session",
    "fvdesk.gui.qt_controller": "fvdesk.gui.runtime.controller",
    "fvdesk.gui.qt_jobs": "fvdesk.gui.runtime.jobs",
    "fvdesk.gui.qt_tiles": "fvdesk.gui.canvas.tiles",
    "fvdesk.gui.qt_tile_view": "fvdesk.gui.canvas.tile_view",
    "fvdesk.gui.qt_canvas": "fvdesk.gui.canvas.panel",
    "fvdesk.gui.qt_zoom": "fvdesk.gui.canvas.zoom",
    "fvdesk.gui.qt_layer_model": "fvdesk.gui.tree.model",
    "fvdesk.gui.qt_tree_panel": "fvdesk.gui.tree.panel",
    "fvdesk.gui.qt_settings": "fvdesk.gui.settings.panel",
    "fvdesk.gui.qt_dataset": "fvdesk.gui.dataset.controller",
    "fvdesk.gui.qt_dataset_dialog": "fvdesk.gui.dataset.dialog",
    "fvdesk.gui.qt_examples": "fvdesk.gui.dataset.examples",
    "fvdesk.gui.qt_examples_browser": "fvdesk.gui.dataset.browser",
    "fvdesk.gui.qt_article": "fvdesk.gui.article.figures",
    "fvdesk.gui.qt_article_ctl": "fvdesk.gui.article.controller",
    "fvdesk.gui.qt_direction": "fvdesk.gui.article.direction",
    "fvdesk.gui.qt_combination": "fvdesk.gui.article.combination",
    "fvdesk.gui.qt_position": "fvdesk.gui.article.position",
    "fvdesk.gui.qt_galleries": "fvdesk.gui.galleries.controller",
}
