"""Importing onnx2torch where torchvision is missing or broken.

onnx2torch registers all its converters when imported, and two of them (``NonMaxSuppression``,
``RoiAlign``: detection post-processing, never part of an image classifier's layers) import
torchvision at module level.  A CPU-only torch (the small desktop bundle) has no matching
torchvision wheel: PyPI's builds need the CUDA torch and raise at import.  Rather than fail to
load every model, fvdesk then gives onnx2torch a placeholder ``torchvision`` for the duration of
its import; a model that really uses those two operators fails when it runs them, with a message
saying torchvision is needed.  With a working torchvision nothing is replaced.
"""

from __future__ import annotations

import functools
import sys
import types
import warnings
from typing import Any

# onnx2torch's Slice indexes a tensor with a list on every forward pass; torch warns about that
# deprecation at each render, in the user's terminal, about code that is not theirs or ours.
warnings.filterwarnings(
    "ignore",
    message="Using a non-tuple sequence for multidimensional indexing",
    category=UserWarning,
    module=r"onnx2torch\.",
)

_STATUS: dict[str, str] = {}


def _missing_torchvision(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError(
        "this operator needs torchvision, which is not installed with this torch build"
    )


def torchvision_status() -> str:
    """``0.29.1`` (its version), or why it is not used."""
    if "torchvision" not in _STATUS:
        try:
            import torchvision

            _STATUS["torchvision"] = str(torchvision.__version__)
        except Exception as e:  # noqa: BLE001 - ImportError, or RuntimeError from a CUDA-only build
            for name in [
                m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")
            ]:
                del sys.modules[name]
            _STATUS["torchvision"] = f"unavailable ({type(e).__name__})"
    return _STATUS["torchvision"]


@functools.lru_cache(maxsize=1)
def import_onnx2torch() -> types.ModuleType:
    """``import onnx2torch`` (with its converter registry), working around a missing torchvision."""
    if torchvision_status().startswith("unavailable"):
        stub = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")
        for name in ("nms", "box_convert", "roi_align"):
            setattr(ops, name, _missing_torchvision)
        stub.ops = ops  # type: ignore[attr-defined]  # a stand-in module object
        sys.modules["torchvision"], sys.modules["torchvision.ops"] = stub, ops
        try:
            import onnx2torch
            import onnx2torch.converter  # noqa: F401
        finally:
            sys.modules.pop("torchvision", None)
            sys.modules.pop("torchvision.ops", None)
        return onnx2torch
    import onnx2torch
    import onnx2torch.converter  # noqa: F401

    return onnx2torch
