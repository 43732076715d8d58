"""Old import paths that a reorganization removed, kept for one release with a warning.

Scripts written against an earlier layout (``fvdesk.core.render``, ``fvdesk.core.objectives``,
``fvdesk.core.model.Preprocessing``) keep running: ``moved(__name__, names)`` turns a module into
a forwarder whose old names import their new home on first read, warn with a
``DeprecationWarning`` that names the new path, and return the object itself.  Nothing is
imported until a name is read, so an unused old path costs nothing.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from collections.abc import Mapping
from typing import Any

#: The release in which the forwarders go away.
REMOVED_IN = "0.3"


class MovedNames(types.ModuleType):
    """A module whose old names forward to their new homes (``_moved``: name -> module)."""

    def __getattr__(self, name: str) -> Any:
        home = self.__dict__.get("_moved", {}).get(name)
        if home is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        warnings.warn(
            f"{self.__name__}.{name} has moved to {home}.{name}; the old path goes away in "
            f"fvdesk {REMOVED_IN}.",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(home), name)

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *self.__dict__.get("_moved", {})})


class CallableMovedNames(MovedNames):
    """A forwarder that is also called like the function of the same name (``fvdesk.core.render``
    is both the old module and the core's lazy ``render`` function: whichever a script gets,
    calling it renders, and only the module's old names warn)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, _, name = self.__dict__["_call"].rpartition(".")
        return getattr(importlib.import_module(module), name)(*args, **kwargs)


def moved(module_name: str, names: Mapping[str, str], *, call: str | None = None) -> None:
    """Make ``module_name`` forward each of ``names`` (name -> new module); ``call`` (a dotted
    function path) makes the module callable as that function."""
    module = sys.modules[module_name]
    module.__class__ = CallableMovedNames if call else MovedNames
    module.__dict__["_moved"] = dict(names)
    if call:
        module.__dict__["_call"] = call
    old = module.__dict__.get("__all__")
    module.__dict__["__all__"] = [*(old or ()), *names]
