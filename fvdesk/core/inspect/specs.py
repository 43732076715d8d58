"""The image views as job specs (torch-free): what to compute or render about one image.

Every spec names its image by path and sha256 (``image``, ``image_sha256``): the provenance
record of each result therefore pins the exact bytes, and the runner refuses a file that changed.
Heat maps are results like renders (an image per slot), so tiles, galleries and ``fvdesk render
--from`` treat every view alike.  The runners are in ``fvdesk.core.inspect.runners`` (torch).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from fvdesk.core.errors import ConfigError, RenderError
from fvdesk.core.jobs.job import JobSpec, Slot, check_kind, unit_caption
from fvdesk.core.jobs.presentation import Labeller, SlotView, register_view

#: Attribution methods: activation x gradient, or integrated gradients along the straight path
#: from a grey image (the baseline) to the image.
METHODS = ("gradient", "integrated")
_TARGET = re.compile(r"^(?:top|(?:class:)?\d+|.+:\d+(?:@\d+,\d+)?)$")


def _check_image(spec: Any) -> None:
    object.__setattr__(spec, "image", str(spec.image))
    if not spec.image:
        raise ConfigError(f"A {spec.type} job needs an image.")


def _count(value: Any, what: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"The {what} must be a whole number >= {low}, got {value!r}.")
    return value


def _weight(value: Any, what: str) -> float:
    v = float(value)
    if not math.isfinite(v) or v < 0:
        raise ConfigError(f"The {what} must be a finite number >= 0, got {value!r}.")
    return v


def _feature(graph: Any, name: str, why: str) -> Any:
    lay = graph[name]
    if lay.kind == "vector" or not lay.spatial:
        raise RenderError(f"Layer {name} has no spatial grid, so {why} is moot.")
    return lay


class _OnImage(JobSpec):
    """A spec about one image (``image`` path, ``image_sha256`` its bytes)."""

    #: ``run_job`` imports it on first use: it registers the runners (torch; this module is not)
    runner_module: ClassVar[str] = "fvdesk.core.inspect.runners"

    image: str
    image_sha256: str

    @property
    def image_name(self) -> str:
        return self.image.replace("\\", "/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ImageJob(_OnImage):
    """The prediction and one layer's activations on the image; slot ``i`` is the heat map of
    the unit with the ``i``-th largest value (the image's top units)."""

    type: ClassVar[str] = "image-activations"

    image: str
    image_sha256: str
    layer: str
    top: int = 9

    def __post_init__(self) -> None:
        _check_image(self)
        _count(self.top, "number of top units", 0)

    def slots(self) -> list[Slot]:
        return [Slot(i, -1, 0, (i,), i) for i in range(self.top)]

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    @property
    def title(self) -> str:
        return f"{self.layer} on {self.image_name}"

    @classmethod
    def of(cls, image: Any, layer: str, **kw: Any) -> ImageJob:
        return cls(str(image.path), image.sha256, layer, **kw)


@dataclass(frozen=True)
class AttributionJob(_OnImage):
    """Attribution of ``target`` (``top``: the predicted class; ``K`` or ``class:K``: class K;
    ``L:U`` a unit of a later layer, ``L:U@x,y`` a neuron) to the activations of ``to_layer``:
    slot 0 is the spatial attribution's heat map; the channel ranking is the event's data."""

    type: ClassVar[str] = "image-attribution"

    image: str
    image_sha256: str
    to_layer: str
    target: str = "top"
    method: str = "gradient"
    steps: int = 32

    def __post_init__(self) -> None:
        _check_image(self)
        object.__setattr__(self, "target", str(self.target).strip())
        if not _TARGET.match(self.target):
            raise ConfigError(
                f"Cannot read the attribution target {self.target!r}; write top, a class index "
                "(7 or class:7) or LAYER:UNIT."
            )
        if self.method not in METHODS:
            raise ConfigError(
                f"Attribution methods are {' and '.join(METHODS)}, not {self.method!r}."
            )
        _count(self.steps, "number of integrated-gradient steps")

    def slots(self) -> list[Slot]:
        return [Slot(0, -1, 0, (0,), 0)]

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.to_layer,)

    @property
    def title(self) -> str:
        return f"attribution of {self.target} to {self.to_layer} on {self.image_name}"

    def validate(self, graph: Any) -> None:
        _feature(graph, self.to_layer, "a spatial attribution")
        if ":" in self.target and not self.target.startswith("class:"):
            name = self.target.rsplit("@", 1)[0].rsplit(":", 1)[0]
            if graph[name].index <= graph[self.to_layer].index:
                raise RenderError(
                    f"The attribution target {self.target} must come after {self.to_layer}."
                )

    @classmethod
    def of(cls, image: Any, to_layer: str, **kw: Any) -> AttributionJob:
        return cls(str(image.path), image.sha256, to_layer, **kw)


@dataclass(frozen=True)
class GroupsJob(_OnImage):
    """Neuron groups (Building Blocks): the layer's activations on the image factored into
    ``groups`` by non-negative matrix factorization.  Slots ``0..k-1`` are the groups' maps over
    the image, slots ``k..2k-1`` renders of each group's factor as a direction objective."""

    type: ClassVar[str] = "image-groups"

    image: str
    image_sha256: str
    layer: str
    groups: int = 6
    seed: int = 0

    def __post_init__(self) -> None:
        _check_image(self)
        _count(self.groups, "number of neuron groups")

    def slots(self) -> list[Slot]:
        k = self.groups
        return [Slot(i, -1, i % k, (i % k,), i) for i in range(2 * k)]

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    @property
    def title(self) -> str:
        return f"{self.groups} neuron groups of {self.layer} on {self.image_name}"

    def validate(self, graph: Any) -> None:
        lay = _feature(graph, self.layer, "a neuron group's map")
        if lay.channels and self.groups > lay.channels:
            raise RenderError(
                f"Layer {self.layer} has {lay.channels} channels, fewer than {self.groups} groups."
            )

    @classmethod
    def of(cls, image: Any, layer: str, **kw: Any) -> GroupsJob:
        return cls(str(image.path), image.sha256, layer, **kw)


@dataclass(frozen=True)
class GridJob(_OnImage):
    """The activation grid (Building Blocks): slot ``y * width + x`` renders the activation
    vector at grid cell ``(x, y)`` as a direction objective; cells whose vector's norm is below
    ``threshold`` times the largest are blank (no result)."""

    type: ClassVar[str] = "image-grid"

    image: str
    image_sha256: str
    layer: str
    height: int
    width: int
    threshold: float = 0.1

    def __post_init__(self) -> None:
        _check_image(self)
        _count(self.height, "grid height")
        _count(self.width, "grid width")
        _weight(self.threshold, "blank-cell threshold")

    def slots(self) -> list[Slot]:
        return [Slot(i, -1, 0, (i,), i) for i in range(self.height * self.width)]

    def cell(self, index: int) -> tuple[int, int]:
        """(x, y) of slot ``index``."""
        return index % self.width, index // self.width

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    @property
    def title(self) -> str:
        return f"activation grid of {self.layer} on {self.image_name}"

    def validate(self, graph: Any) -> None:
        _feature(graph, self.layer, "an activation grid")

    @classmethod
    def of(cls, image: Any, layer: str, graph: Any, **kw: Any) -> GridJob:
        """The grid of ``layer`` at the image's size (the layer's grid in ``graph``)."""
        h, w = _feature(graph, layer, "an activation grid").spatial
        return cls(str(image.path), image.sha256, layer, int(h), int(w), **kw)


@dataclass(frozen=True)
class AccentuateJob(_OnImage):
    """Feature accentuation (Hamblin, Fel et al. 2024): each unit rendered *starting from the
    image*, with a penalty keeping the result close to it: in pixels (``penalty_layer`` None)
    or in the activations of ``penalty_layer``.  ``weight`` 1 makes a 10 % RMS change in pixels
    (or the layer's own RMS in activations) cost as much as the unit's value on the image."""

    type: ClassVar[str] = "image-accentuate"

    image: str
    image_sha256: str
    layer: str
    units: tuple[int, ...]
    kind: str = "channel"
    penalty_layer: str | None = None
    weight: float = 1.0

    def __post_init__(self) -> None:
        _check_image(self)
        object.__setattr__(self, "units", tuple(int(u) for u in self.units))
        check_kind(self.kind)
        if self.kind == "deepdream" or not self.units:
            raise ConfigError(f"An accentuation of {self.layer} needs at least one unit.")
        _weight(self.weight, "accentuation penalty weight")

    def slots(self) -> list[Slot]:
        return [Slot(i, u, 0, (u, 0), i) for i, u in enumerate(self.units)]

    @property
    def layers(self) -> tuple[str, ...]:
        extra = (self.penalty_layer,) if self.penalty_layer else ()
        return (self.layer, *extra)

    @property
    def title(self) -> str:
        return f"{self.layer} accentuated in {self.image_name}"

    def validate(self, graph: Any) -> None:
        from fvdesk.core.jobs.job import UnitJob

        UnitJob(self.layer, self.units, kind=self.kind).validate(graph)
        if self.penalty_layer:
            graph[self.penalty_layer]

    @classmethod
    def of(cls, image: Any, layer: str, units: Any, **kw: Any) -> AccentuateJob:
        return cls(str(image.path), image.sha256, layer, tuple(units), **kw)


@dataclass(frozen=True)
class InversionJob(_OnImage):
    """Feature inversion (Mahendran & Vedaldi 2015) or, with ``caricature``, Lucid's caricature:
    an image whose activations at ``layer`` match the image's, by dot product times cosine
    similarity to the power ``power`` (a caricature: power 0, the dot product alone, which
    exaggerates what the layer sees)."""

    type: ClassVar[str] = "image-invert"

    image: str
    image_sha256: str
    layer: str
    caricature: bool = False
    power: float | None = None

    #: Cosine power of inversion and caricature when ``power`` is None.
    POWERS: ClassVar[dict[bool, float]] = {False: 4.0, True: 0.0}

    def __post_init__(self) -> None:
        _check_image(self)
        if self.power is not None:
            _weight(self.power, "cosine power")

    @property
    def cosine_power(self) -> float:
        return float(self.POWERS[bool(self.caricature)] if self.power is None else self.power)

    def slots(self) -> list[Slot]:
        return [Slot(0, -1, 0, (0,), 0)]

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    @property
    def title(self) -> str:
        what = "caricature" if self.caricature else "inversion"
        return f"{what} of {self.layer} on {self.image_name}"

    @classmethod
    def of(cls, image: Any, layer: str, **kw: Any) -> InversionJob:
        return cls(str(image.path), image.sha256, layer, **kw)


# ------------------------------------------------------------------------------------------------
# How their slots look
# ------------------------------------------------------------------------------------------------
def _view_top(spec: ImageJob, slot: Slot, _l: Labeller) -> SlotView:
    return SlotView(slot.index, spec.layer, -1, 0, "activation-map", False,
                    f"{spec.layer} top {slot.index + 1}")  # fmt: skip


def _view_attribution(spec: AttributionJob, slot: Slot, _l: Labeller) -> SlotView:
    return SlotView(slot.index, spec.to_layer, -1, 0, "attribution-map", False,
                    f"{spec.target} → {spec.to_layer}")  # fmt: skip


def _view_groups(spec: GroupsJob, slot: Slot, _l: Labeller) -> SlotView:
    g = slot.facet
    kind = "group-map" if slot.index < spec.groups else "group"
    what = "map" if kind == "group-map" else "render"
    return SlotView(slot.index, spec.layer, -1, g, kind, False,
                    f"{spec.layer} group {g + 1}/{spec.groups} {what}", strip=True)  # fmt: skip


def _view_grid(spec: GridJob, slot: Slot, _l: Labeller) -> SlotView:
    x, y = spec.cell(slot.index)
    return SlotView(slot.index, spec.layer, -1, slot.index, "grid-cell", False,
                    f"{spec.layer}@{x},{y}")  # fmt: skip


def _view_accentuate(spec: AccentuateJob, slot: Slot, label_of: Labeller) -> SlotView:
    caption = unit_caption(spec.layer, slot.unit, kind=spec.kind) + " accentuated"
    return SlotView(slot.index, spec.layer, slot.unit, 0, "accentuate", False, caption,
                    label_of(spec.layer, slot.unit))  # fmt: skip


def _view_inversion(spec: InversionJob, slot: Slot, _l: Labeller) -> SlotView:
    kind = "caricature" if spec.caricature else "inversion"
    return SlotView(slot.index, spec.layer, -1, 0, kind, False, f"{kind} of {spec.layer}")


register_view(ImageJob, _view_top)
register_view(AttributionJob, _view_attribution)
register_view(GroupsJob, _view_groups)
register_view(GridJob, _view_grid)
register_view(AccentuateJob, _view_accentuate)
register_view(InversionJob, _view_inversion)

#: Every image view's spec type.
IMAGE_SPECS: tuple[type[JobSpec], ...] = (ImageJob, AttributionJob, GroupsJob, GridJob,
                                          AccentuateJob, InversionJob)  # fmt: skip

__all__ = [
    "IMAGE_SPECS",
    "METHODS",
    "AccentuateJob",
    "AttributionJob",
    "GridJob",
    "GroupsJob",
    "ImageJob",
    "InversionJob",
]
