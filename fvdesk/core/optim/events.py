"""What running a job reports: its events and results (numpy only, no torch).

The app dispatches on these classes with ``isinstance`` without importing the engine.  Every
image of a job has a *slot* (its index in the job, ``fvdesk.core.optim.slots.Slot``); events say
which slots their images are, so a front end routes them to tiles without arithmetic of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fvdesk.core.optim.provenance import Provenance


@dataclass(frozen=True, kw_only=True)
class BatchEvent:
    """Which images of the job a batch event is about: the job ``slots`` of its images, the unit
    and facet each holds, and ``offset``, the first slot of the batch."""

    units: tuple[int, ...] | None = None
    offset: int = 0
    facets: tuple[int, ...] | None = None
    slots: tuple[int, ...] | None = None


@dataclass(frozen=True)
class StepEvent(BatchEvent):
    """One optimization step: per-image objective values under this step's transforms."""

    step: int
    steps: int
    loss: float
    values: np.ndarray


@dataclass(frozen=True)
class PreviewEvent(BatchEvent):
    """Current images, uint8 (B, H, W, C)."""

    step: int
    images: np.ndarray


@dataclass(frozen=True)
class NoticeEvent:
    """Something the user should know (batch halved, dead units, revived units)."""

    message: str


@dataclass(frozen=True)
class ProgressEvent:
    """Progress of work that is not optimization steps (a dataset pass): ``done`` of ``total``
    ``what`` (e.g. images), so a front end can draw a bar and estimate the time left."""

    done: int
    total: int
    what: str = "images"
    message: str = ""


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
    """One finished image of a job.

    ``value`` is the unit's own measure (activation, logit, probability, mean square for
    deepdream, the weighted sum for a combination) on the final image, not negated for negative
    renders; ``unit`` is -1 when the image is not about one unit.  ``provenance`` is the record
    that reproduces the image (``Job.provenance``: a ``Provenance``; a plain mapping given here
    is read into one); ``caption`` is how people see it named (``presentation.SlotView``).
    """

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
    slot: int = 0
    cancelled: bool = False  # stopped by the user before its steps were done (not a result)
    caption: str = ""
    seconds: float = 0.0
    provenance: Provenance = field(default_factory=Provenance)

    def __post_init__(self) -> None:
        if not isinstance(self.provenance, Provenance):
            self.provenance = Provenance.of(self.provenance)


@dataclass(frozen=True)
class UnitDoneEvent:
    result: UnitResult


@dataclass
class JobResult:
    """How a job ended: its finished images in slot order, and whether it was cancelled."""

    results: list[UnitResult]
    cancelled: bool
    seconds: float
    device: str


Event = StepEvent | PreviewEvent | NoticeEvent | UnitDoneEvent | ProgressEvent
