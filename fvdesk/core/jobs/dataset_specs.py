"""The dataset kinds of job: ``ExamplesJob`` (an activation pass over an image folder) and
``ClusterJob`` (a unit's top examples as cluster facets)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from fvdesk.core.errors import ConfigError, RenderError
from fvdesk.core.jobs.specs import JobSpec, UnitJob, _check_position
from fvdesk.core.jobs.terms import check_kind
from fvdesk.core.optim.kinds import MEASURES
from fvdesk.core.optim.slots import Slot

#: Weight of the cosine term that steers a cluster facet toward its centroid, relative to the
#: unit objective's magnitude (objectives.Steered).  On the demo model 3 makes every facet the
#: one closest to its own centroid at a cost of 5-30 % of the unit's value; 1 often does not.
DEFAULT_CLUSTER_WEIGHT = 3.0
#: What a dataset-examples pass measures per unit (``kinds.MEASURES``).
EXAMPLE_KINDS: tuple[str, ...] = MEASURES


@dataclass(frozen=True)
class ExamplesJob(JobSpec):
    """Dataset examples: one activation pass over the images under ``root`` for ``targets``
    (layers), keeping each unit's ``top`` highest and ``bottom`` lowest images and a histogram.

    ``kind`` ``channel`` ranks images by the unit's spatial max (and min); ``neuron`` by the
    value at grid position ``x, y`` (the centre when ``None``).  It renders no image (no slots);
    ``fvdesk.core.jobs.passes.run_examples`` is its runner.
    """

    type: ClassVar[str] = "examples"

    root: str
    targets: tuple[str, ...]
    kind: str = "channel"
    x: int | None = None
    y: int | None = None
    top: int = 9
    bottom: int = 9
    batch: int = 32
    engine: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", str(self.root))
        object.__setattr__(self, "targets", tuple(str(t) for t in self.targets))
        if not self.targets:
            raise ConfigError("A dataset-examples job needs at least one layer.")
        if self.kind not in EXAMPLE_KINDS:
            raise ConfigError(
                f"Dataset examples measure {' or '.join(EXAMPLE_KINDS)}, not {self.kind!r}."
            )
        for name in ("top", "bottom", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "batch" else 0):
                raise ConfigError(
                    f"The examples setting {name!r} must be a whole number, got {v!r}."
                )

    def slots(self) -> list[Slot]:
        return []

    @property
    def layers(self) -> tuple[str, ...]:
        return self.targets

    @property
    def title(self) -> str:
        what = self.targets[0] if len(self.targets) == 1 else f"{len(self.targets)} layers"
        return f"examples of {what} in {self.root}"

    def validate(self, graph: Any) -> None:
        for name in self.targets:
            lay = graph[name]
            if self.kind == "neuron":
                if lay.kind != "feature":
                    raise RenderError(
                        f"Layer {name} has no spatial grid, so a neuron position is moot."
                    )
                _check_position(lay, self.x, self.y)


@dataclass(frozen=True)
class ClusterJob(JobSpec):
    """Facets from dataset clusters (the article, after Wei et al. 2015): the unit's top
    examples were clustered by their activation vectors on ``cluster_layer`` (at the unit's
    max position, or spatially averaged when ``pooled``); facet ``f`` maximizes the unit plus a
    cosine term toward ``centroids[f]``.  The centroids are stored here, so a provenance record
    reproduces the facets without the images; ``dataset`` and ``members`` (each cluster's
    example files, relative to ``dataset``) say where they came from."""

    type: ClassVar[str] = "clusters"

    layer: str
    unit: int
    centroids: tuple[tuple[float, ...], ...]
    cluster_layer: str
    kind: str = "channel"
    pooled: bool = False
    weight: float = DEFAULT_CLUSTER_WEIGHT
    dataset: str = ""
    members: tuple[tuple[str, ...], ...] = ()

    def __post_init__(self) -> None:
        cents = tuple(tuple(float(v) for v in c) for c in self.centroids)
        object.__setattr__(self, "centroids", cents)
        object.__setattr__(self, "members", tuple(tuple(str(p) for p in m) for m in self.members))
        object.__setattr__(self, "unit", int(self.unit))
        check_kind(self.kind)
        if (
            not cents
            or len({len(c) for c in cents}) != 1
            or not all(math.isfinite(v) for c in cents for v in c)
        ):
            raise ConfigError(
                "A cluster job needs at least one centroid, all of one length and finite."
            )
        if not math.isfinite(float(self.weight)) or self.weight < 0:
            raise ConfigError(
                f"The cluster weight must be a finite number >= 0, got {self.weight!r}."
            )

    @property
    def facets(self) -> int:
        return len(self.centroids)

    def slots(self) -> list[Slot]:
        return [Slot(f, self.unit, f, (self.unit, f), f) for f in range(self.facets)]

    @property
    def layers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.layer, self.cluster_layer)))

    @property
    def title(self) -> str:
        return f"{self.layer}:{self.unit} ({self.facets} dataset clusters)"

    def validate(self, graph: Any) -> None:
        UnitJob(self.layer, (self.unit,), kind=self.kind).validate(graph)
        lay = graph[self.cluster_layer]
        if lay.channels and lay.channels != len(self.centroids[0]):
            raise RenderError(
                f"The cluster centroids have {len(self.centroids[0])} values but layer "
                f"{self.cluster_layer} has {lay.channels} channels."
            )
