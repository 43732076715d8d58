"""Locate files shipped in ``resources/`` in a source checkout, an installed wheel or a frozen app."""

from __future__ import annotations

import sys
from pathlib import Path


def resources_dir() -> Path:
    """The folder holding ``models/``, ``labels/`` and ``icons/``."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    try:
        import fvdesk.resources as res

        return Path(res.__file__).resolve().parent
    except ImportError:  # pragma: no cover - only when the package mapping is missing
        return Path(__file__).resolve().parents[2] / "resources"


def resource_path(*parts: str) -> Path:
    """Path of one shipped file, e.g. ``resource_path("models", "demo.onnx")``."""
    return resources_dir().joinpath(*parts)


def demo_model_path() -> Path:
    """The embedded demo model that the app opens when no model is given."""
    return resource_path("models", "demo.onnx")
