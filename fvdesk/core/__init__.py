"""fvdesk's Qt-free core: model loading, the layer graph, the optimization engine and galleries.

Heavy modules (torch, onnx) load on first use so that ``import fvdesk.core`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

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
    "load_model": "fvdesk.core.loader",
    "LoadedModel": "fvdesk.core.model",
    "InputSpec": "fvdesk.core.model",
    "Preprocessing": "fvdesk.core.model",
    "PRESETS": "fvdesk.core.model",
    "Layer": "fvdesk.core.model",
    "LayerGraph": "fvdesk.core.model",
    "pick_device": "fvdesk.core.device",
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fvdesk.core' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
