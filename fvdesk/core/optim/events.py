"""What a render reports: its events and results (numpy only, no torch).

The app dispatches on these classes with ``isinstance`` without importing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


# -- events and results ---------------------------------------------------------------------------
@dataclass(frozen=True)
class StepEvent:
    """One optimization step: per-image objective values under this step's transforms.

    ``offset`` is the index of ``values[0]`` in the whole batch (non-zero only after the batch was
    split); ``units`` says which unit each image holds (``render_units``).
    """

    step: int
    steps: int
    loss: float
    values: np.ndarray
    units: tuple[int, ...] | None = None
    offset: int = 0
    facets: tuple[int, ...] | None = None  # the facet of each image, with ``units``


@dataclass(frozen=True)
class PreviewEvent:
    """Current images, uint8 (B, H, W, C)."""

    step: int
    images: np.ndarray
    units: tuple[int, ...] | None = None
    offset: int = 0
    facets: tuple[int, ...] | None = None


@dataclass(frozen=True)
class NoticeEvent:
    """Something the user should know (batch halved, dead units, revived units)."""

    message: str


@dataclass
class RenderResult:
    """The final images (uint8 (B, H, W, C)) and their objective values (untransformed)."""

    images: np.ndarray
    values: np.ndarray
    steps_done: int
    cancelled: bool
    dead: list[int]
    seconds: float
    device: str
    batch: int


@dataclass
class UnitResult:
    """One rendered unit. ``value`` is the unit's own measure (activation, logit, probability,
    mean square for deepdream) on the final image, not negated for negative renders; ``unit`` is
    -1 for deepdream (the whole layer)."""

    layer: str
    unit: int
    facet: int
    label: str | None
    kind: str
    negative: bool
    value: float
    image: np.ndarray
    dead: bool
    seed: int
    steps: int


@dataclass(frozen=True)
class UnitDoneEvent:
    result: UnitResult


Event = StepEvent | PreviewEvent | NoticeEvent | UnitDoneEvent
