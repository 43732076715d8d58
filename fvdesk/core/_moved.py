"""Module paths that moved, kept importable for one release (public names are an API).

``import fvdesk.core.optim.run`` still works after the module moved to ``fvdesk.core.jobs.run``:
it warns (``DeprecationWarning``) and gives the moved module itself, so names, ``isinstance`` and
a test's monkeypatch all reach the one module.  An import hook does it rather than a shim file at
the old path, for two reasons: a file left at the old path makes git see an edit, not a rename, so
concurrent edits of the moved file would not follow it; and a shim importing its new home would
tie the old package to the new one again (the package cycle the move removed).
``tests/project/test_import_cycles.py`` fails on any use of an old path inside the repository.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Mapping
from types import ModuleType

#: old module name -> new module name (the core's; ``fvdesk.gui._moved`` has the app's)
MOVED: dict[str, str] = {
    "fvdesk.core.optim.run": "fvdesk.core.jobs.run",
    "fvdesk.core.optim.jobs": "fvdesk.core.jobs.job",
    "fvdesk.core.optim.presentation": "fvdesk.core.jobs.presentation",
    "fvdesk.core.dataset.passes": "fvdesk.core.jobs.passes",
    "fvdesk.core.dataset.clusters": "fvdesk.core.jobs.clusters",
    "fvdesk.core.dataset.export": "fvdesk.core.output.examples",
    "fvdesk.core.dataset.folder": "fvdesk.core.imagefolder",
}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds an old module name of ``table`` and loads it as the module at its new name."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self.table = table
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def find_spec(
        self, name: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        return importlib.machinery.ModuleSpec(name, self) if name in self.table else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = self.table[spec.name]
        warnings.warn(
            f"{spec.name} moved to {new}; the old name goes in a later release",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__  # the import system overwrites it: put it back
        return module

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        assert spec is not None  # the import system set it before calling exec_module
        module.__spec__ = self._specs.pop(spec.name, spec)


def install(table: Mapping[str, str] = MOVED) -> None:
    """Make the old names of ``table`` importable (once per table)."""
    if not any(isinstance(f, _Alias) and f.table is table for f in sys.meta_path):
        sys.meta_path.append(_Alias(table))
