"""fvdesk's Qt-free core, in layers that import only the layers before them: ``model/`` (loading,
canonicalization, the layer graph, sidecar, labels), ``optim/`` (job specs, parameterizations,
transforms, objectives, the render engine), ``dataset/`` (what units respond to in the user's
images), ``jobs/`` (running any job: renders, dataset passes, cluster facets), ``output/``
(galleries, examples in galleries, the atlas); tests/project/test_import_cycles.py keeps it so.

Heavy modules (torch, onnx) load on first use so that ``import fvdesk.core`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from fvdesk.core import _moved
from fvdesk.core.errors import (
    AmbiguousInputError,
    ConfigError,
    FvdeskError,
    GalleryError,
    ModelLoadError,
    RenderError,
    UnsupportedModelError,
)

_LAZY = {
    "load_model": "fvdesk.core.model.loader",
    "LoadedModel": "fvdesk.core.model.loaded",
    "InputSpec": "fvdesk.core.model.loaded",
    "Preprocessing": "fvdesk.core.model.preprocessing",
    "PRESETS": "fvdesk.core.model.preprocessing",
    "Layer": "fvdesk.core.model.layers",
    "LayerGraph": "fvdesk.core.model.layers",
    "pick_device": "fvdesk.core.device",
    "RenderSettings": "fvdesk.core.optim.settings",
    "TransformSettings": "fvdesk.core.optim.settings",
    "render": "fvdesk.core.optim.render",
    "render_units": "fvdesk.core.jobs.run",
    "run_job": "fvdesk.core.jobs.run",
    "drive": "fvdesk.core.optim.drive",
    "Job": "fvdesk.core.jobs.job",
    "UnitJob": "fvdesk.core.jobs.job",
    "CombinationJob": "fvdesk.core.jobs.job",
    "Term": "fvdesk.core.jobs.job",
    "Gallery": "fvdesk.core.output.gallery",
    "read_gallery": "fvdesk.core.output.gallery",
}

__all__ = [
    "AmbiguousInputError",
    "ConfigError",
    "FvdeskError",
    "GalleryError",
    "ModelLoadError",
    "RenderError",
    "UnsupportedModelError",
    *_LAZY,
]


_moved.install()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fvdesk.core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
