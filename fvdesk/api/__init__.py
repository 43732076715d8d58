"""fvdesk's public Python API: what ``import fvdesk`` offers scripts and notebooks (docs/API.md).

A thin layer over the core that builds the same jobs the command line builds and drives them the
same way, so a render from a notebook has the captions, settings and provenance of the same
render from ``fvdesk render``.  The names below are the stable surface (``tests/api/test_api_names.py``
pins them; removing one needs a deprecation shim):

* models: ``load_model`` (with the preprocessing, labels and input size choices) -> ``Model``;
  ``demo_model_path``; ``Preprocessing`` and ``PRESETS`` (the named preprocessing presets);
* objectives: ``unit``, ``objective`` (``"L:12 + 0.5*L:40"``, as ``--objective`` reads it) and
  the ``Objective`` they compose into with ``+``, ``-``, ``*`` and ``/``;
* renders: ``render`` (an objective) and ``render_units`` (units of one layer), with
  ``RenderSettings`` / ``TransformSettings`` or the render flags as keywords -> ``Renders`` of
  ``RenderedImage``;
* galleries: ``save_gallery``, ``open_gallery`` -> ``GalleryView``;
* dataset examples: ``examples`` -> ``Examples``;
* errors: ``FvdeskError`` and the subclasses API calls raise (one sentence each).

Results, galleries and models display themselves in Jupyter (``_repr_png_``, ``_repr_html_``).
Nothing heavy loads until a name is used: ``import fvdesk`` imports neither torch nor Qt.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> the module that defines or re-exports it.
PUBLIC: dict[str, str] = {
    "load_model": "fvdesk.api._model",
    "Model": "fvdesk.api._model",
    "demo_model_path": "fvdesk.api._model",
    "Preprocessing": "fvdesk.api._model",
    "PRESETS": "fvdesk.api._model",
    "Objective": "fvdesk.api._objectives",
    "objective": "fvdesk.api._objectives",
    "unit": "fvdesk.api._objectives",
    "RenderSettings": "fvdesk.api._rendering",
    "TransformSettings": "fvdesk.api._rendering",
    "render": "fvdesk.api._rendering",
    "render_units": "fvdesk.api._rendering",
    "Renders": "fvdesk.api._rendering",
    "RenderedImage": "fvdesk.api._galleries",
    "GalleryView": "fvdesk.api._galleries",
    "open_gallery": "fvdesk.api._galleries",
    "save_gallery": "fvdesk.api._galleries",
    "examples": "fvdesk.api._examples",
    "Examples": "fvdesk.api._examples",
    "FvdeskError": "fvdesk.core.errors",
    "ModelLoadError": "fvdesk.core.errors",
    "ConfigError": "fvdesk.core.errors",
    "RenderError": "fvdesk.core.errors",
    "GalleryError": "fvdesk.core.errors",
    "DatasetError": "fvdesk.core.errors",
}

__all__ = list(PUBLIC)


def __getattr__(name: str) -> Any:
    module = PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'fvdesk.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next read is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *PUBLIC})
