"""What inspecting an image finds: plain numpy data, no torch (the app's GUI thread reads it).

Maps live on the layer's grid (``h, w``); ``heatmap`` methods upsample them to the inspected
image (bilinear, as the article's Building Blocks figures overlay them) and normalize to [0, 1],
and ``overlay`` is the one look of a heat map over the image (tiles, galleries, the README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fvdesk.core.optim.events import JobResult


def upsample(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map bilinearly resized to ``size`` = (H, W), float32 (align-corners off)."""
    m = np.asarray(m, dtype=np.float32)
    h, w = m.shape
    hh, ww = size
    if (h, w) == (hh, ww):
        return m.copy()
    ys = np.clip((np.arange(hh, dtype=np.float64) + 0.5) * h / hh - 0.5, 0, h - 1)
    xs = np.clip((np.arange(ww, dtype=np.float64) + 0.5) * w / ww - 0.5, 0, w - 1)
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = m[y0][:, x0] * (1 - fx) + m[y0][:, x1] * fx
    bot = m[y1][:, x0] * (1 - fx) + m[y1][:, x1] * fx
    return (top * (1 - fy) + bot * fy).astype(np.float32)


def normalized(m: np.ndarray) -> np.ndarray:
    """The positive part of ``m`` scaled to [0, 1] by its maximum (all zeros stay zeros)."""
    m = np.clip(np.asarray(m, dtype=np.float32), 0, None)
    top = float(m.max(initial=0.0))
    return m / top if top > 0 else np.zeros_like(m)


def heat(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A grid map as an image-sized heat map in [0, 1]."""
    return normalized(upsample(m, size))


# A perceptually ordered dark-to-bright ramp (black, purple, red, orange, pale yellow).
_RAMP = np.array(
    [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], dtype=np.float32
)


def colormap(h: np.ndarray) -> np.ndarray:
    """[0, 1] values as uint8 RGB on the ramp above, (…, 3)."""
    t = np.clip(np.asarray(h, dtype=np.float32), 0, 1) * (len(_RAMP) - 1)
    i = np.minimum(t.astype(int), len(_RAMP) - 2)
    f = (t - i)[..., None]
    return (_RAMP[i] * (1 - f) + _RAMP[i + 1] * f + 0.5).astype(np.uint8)


def overlay(pixels: np.ndarray, h: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """The heat map ``h`` (H, W) in [0, 1] over the image (uint8 (H, W, 3)), the image dimmed
    where the map is low so the eye goes where the unit looks."""
    base = np.asarray(pixels, dtype=np.float32)
    hh = np.clip(np.asarray(h, dtype=np.float32), 0, 1)[..., None]
    mixed = base * (1 - alpha * hh) * (0.35 + 0.65 * hh) + colormap(hh[..., 0]) * alpha * hh
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


@dataclass
class ClassScore:
    index: int
    label: str | None
    probability: float
    logit: float


@dataclass
class Prediction:
    """The classifier's answer on the image: ``classes`` best first (top-5)."""

    layer: str
    classes: list[ClassScore]

    @property
    def best(self) -> ClassScore:
        return self.classes[0]


@dataclass
class TopUnit:
    unit: int
    value: float
    label: str | None
    heatmap: np.ndarray  # (H, W) float32 in [0, 1]


@dataclass
class LayerActivations:
    """A layer on the image: each unit's value (its spatial max on a feature map, as a dataset
    pass ranks images; the vector's value on a vector layer), units sorted by it, and the maps."""

    layer: str
    kind: str
    values: np.ndarray  # (C,)
    order: np.ndarray  # (C,) units, largest value first
    maps: np.ndarray | None  # (C, h, w) float32, None for vector layers
    size: tuple[int, int]  # the image's (H, W)
    labels: list[str | None] | None = None

    def heatmap(self, unit: int) -> np.ndarray:
        """Where ``unit`` fires, image-sized in [0, 1] (uniform for vector layers)."""
        if self.maps is None:
            return np.full(self.size, 1.0, dtype=np.float32)
        return heat(self.maps[unit], self.size)

    def top(self, k: int) -> list[TopUnit]:
        out = []
        for u in self.order[:k]:
            lab = self.labels[int(u)] if self.labels else None
            out.append(TopUnit(int(u), float(self.values[u]), lab, self.heatmap(int(u))))
        return out


@dataclass
class Attribution:
    """How much the earlier layer's activations contribute to the target (activation times
    gradient, Building Blocks): per position summed over channels, per unit summed over
    positions."""

    target: str
    to_layer: str
    method: str
    steps: int
    spatial: np.ndarray  # (h, w) signed
    channels: np.ndarray  # (C,) signed
    size: tuple[int, int]
    value: float = 0.0  # the target's value on the image

    @property
    def heatmap(self) -> np.ndarray:
        return heat(self.spatial, self.size)

    @property
    def order(self) -> np.ndarray:
        return np.argsort(-self.channels, kind="stable")

    def top(self, k: int) -> list[tuple[int, float]]:
        return [(int(u), float(self.channels[u])) for u in self.order[:k]]


@dataclass
class NeuronGroups:
    """The layer's activations on the image factored into ``k`` non-negative groups (NMF):
    ``A ≈ maps.T @ factors`` with A the (positions, channels) activations."""

    layer: str
    factors: np.ndarray  # (k, C) >= 0
    maps: np.ndarray  # (k, h, w) >= 0
    error: float  # ||A - WH||_F / ||A||_F
    size: tuple[int, int]

    @property
    def k(self) -> int:
        return int(self.factors.shape[0])

    def heatmap(self, g: int) -> np.ndarray:
        return heat(self.maps[g], self.size)


@dataclass
class ActivationGrid:
    """The layer's activation vector at every grid position; cells whose vector is near zero
    (norm below ``threshold`` times the largest) are ``blank`` and not rendered."""

    layer: str
    vectors: np.ndarray  # (h, w, C)
    norms: np.ndarray  # (h, w)
    blank: np.ndarray  # (h, w) bool
    top_units: np.ndarray  # (h, w, 3) the largest units per cell
    threshold: float

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.norms.shape[0]), int(self.norms.shape[1])

    def cells(self) -> list[tuple[int, int]]:
        """(x, y) of the cells to render, row by row."""
        ys, xs = np.nonzero(~self.blank)
        return [(int(x), int(y)) for y, x in zip(ys, xs, strict=True)]


@dataclass(frozen=True)
class InspectEvent:
    """What a view found (one of the classes above), before its images are done."""

    data: Any


@dataclass
class InspectJobResult(JobResult):
    """A view's images (``results``) plus what it found (``data``)."""

    data: list[Any] = field(default_factory=list)

    @classmethod
    def of(cls, base: JobResult, data: Sequence[Any]) -> InspectJobResult:
        return cls(base.results, base.cancelled, base.seconds, base.device, list(data))


__all__ = [
    "ActivationGrid",
    "Attribution",
    "ClassScore",
    "InspectEvent",
    "InspectJobResult",
    "LayerActivations",
    "NeuronGroups",
    "Prediction",
    "TopUnit",
    "colormap",
    "heat",
    "normalized",
    "overlay",
    "upsample",
]
