"""fvdesk: feature visualization for ONNX image classifiers.

``import fvdesk`` is the public Python API for scripts and notebooks (``fvdesk.api`` lists it;
docs/API.md walks through it).  Its names load on first use, so importing fvdesk (and reading
``fvdesk.__version__``) imports neither torch nor Qt.
"""

from __future__ import annotations

from typing import Any

from fvdesk.api import PUBLIC as _PUBLIC  # a table of names: imports nothing heavy

__version__ = "0.1.0"

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'fvdesk' has no attribute {name!r}")
    import fvdesk.api

    value = getattr(fvdesk.api, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
