"""Loading a model: ``loader`` (ONNX to torch), ``loaded`` (the ``LoadedModel``), ``layers``,
``preprocessing``, ``labels``, ``sidecar`` and the graph repairs.

Until fvdesk 0.3 the package also answers the names of the module ``fvdesk.core.model`` it
replaced (``fvdesk.core.model.Preprocessing``, ``LoadedModel``, ...), each with a
``DeprecationWarning`` naming its new module.
"""

from __future__ import annotations

from fvdesk.core._forward import moved

_PRE = "fvdesk.core.model.preprocessing"
_LOADED = "fvdesk.core.model.loaded"
_LAYERS = "fvdesk.core.model.layers"
moved(
    __name__,
    {
        "Preprocessing": _PRE,
        "PRESETS": _PRE,
        "DEFAULT_PRESET": _PRE,
        "IMAGENET_MEAN": _PRE,
        "IMAGENET_STD": _PRE,
        "preset": _PRE,
        "InputSpec": _LOADED,
        "Parity": _LOADED,
        "LoadedModel": _LOADED,
        "Layout": _LAYERS,
        "LayerKind": _LAYERS,
        "Layer": _LAYERS,
        "TreeNode": _LAYERS,
        "LayerGraph": _LAYERS,
    },
)
