"""The app's old flat module names (``fvdesk.gui.qt_*``), kept importable for one release.

The app's modules moved into sub-packages by concern.  ``import fvdesk.gui.qt_tiles`` still works:
it warns (``DeprecationWarning``) and gives the module at its new path, the same module object,
so attributes set on it (a test's monkeypatch) reach the code that uses it.
``tests/test_gui_layers.py`` fails on any old name used inside the repository.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

#: old module name under ``fvdesk.gui`` -> new one
MOVED: dict[str, str] = {
    "qt_main_window": "shell.main_window",
    "qt_actions": "shell.actions",
    "qt_menus": "shell.menus",
    "qt_docks": "shell.docks",
    "qt_about": "shell.about",
    "qt_prefs": "shell.prefs",
    "qt_status": "shell.status",
    "qt_worker": "runtime.worker",
    "qt_runners": "runtime.runners",
    "qt_session": "runtime.session",
    "qt_controller": "runtime.controller",
    "qt_jobs": "runtime.jobs",
    "qt_tiles": "canvas.tiles",
    "qt_tile_view": "canvas.tile_view",
    "qt_canvas": "canvas.panel",
    "qt_zoom": "canvas.zoom",
    "qt_layer_model": "tree.model",
    "qt_tree_panel": "tree.panel",
    "qt_settings": "settings.panel",
    "qt_dataset": "dataset.controller",
    "qt_dataset_dialog": "dataset.dialog",
    "qt_examples": "dataset.examples",
    "qt_examples_browser": "dataset.browser",
    "qt_article": "article.figures",
    "qt_article_ctl": "article.controller",
    "qt_direction": "article.direction",
    "qt_combination": "article.combination",
    "qt_position": "article.position",
    "qt_galleries": "galleries.controller",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``fvdesk.gui.<old>`` and loads it as the module at its new path."""

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, name: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        old = name.rpartition(".")[2]
        if not name.startswith("fvdesk.gui.") or name.count(".") != 2 or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(name, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = f"fvdesk.gui.{MOVED[spec.name.rpartition('.')[2]]}"
        warnings.warn(
            f"{spec.name} moved to {new}; the old name goes in a later release",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__  # the import system overwrites it: put it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._specs.pop(module.__spec__.name, module.__spec__)


def install() -> None:
    """Put the alias finder on ``sys.meta_path`` once."""
    if not any(isinstance(f, _Alias) for f in sys.meta_path):
        sys.meta_path.append(_Alias())
