"""Which layers an image is inspected at (torch-free): one rule for the app and scripts."""

from __future__ import annotations

from typing import Any


def inspectable_layers(graph: Any) -> list[str]:
    """Layers whose activations on an image can be shown: converted feature maps and vectors."""
    return [lay.name for lay in graph if lay.available and lay.kind in ("feature", "vector")]


def default_layer(graph: Any) -> str | None:
    """The layer inspected first: the last feature map with a grid (the deepest spatial layer,
    where units read as objects and parts; a global pool's 1×1 map has nothing to show), else
    the last vector layer (the logits of a classifier)."""
    layers = [lay for lay in graph if lay.available]
    spatial = [lay for lay in layers
               if lay.kind == "feature" and lay.spatial and lay.spatial[0] * lay.spatial[1] > 1]  # fmt: skip
    if spatial:
        return spatial[-1].name
    vectors = [lay for lay in layers if lay.kind == "vector"]
    return vectors[-1].name if vectors else None


__all__ = ["default_layer", "inspectable_layers"]
