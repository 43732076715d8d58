"""``ActivationAtlasJob``: what an activation atlas is made of (torch-free, so the app's GUI
thread can build one before the engine is loaded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fvdesk.core.errors import ConfigError, RenderError
from fvdesk.core.jobs.job import JobSpec, Slot

#: Bytes the collected vectors may take (float32); more images get fewer positions each.
DEFAULT_MAX_BYTES = 256 * 2**20


@dataclass(frozen=True)
class ActivationAtlasJob(JobSpec):
    """An activation atlas of ``layer`` over the images under ``root``, written to ``out``.

    ``per_image`` positions are drawn per image (seeded by ``seed`` and the image's path, so a
    folder that grows keeps its earlier draws); ``max_vectors`` caps how many are kept in memory
    (0: as many as ``DEFAULT_MAX_BYTES`` allows).  ``grid`` x ``grid`` cells are laid over the UMAP
    map; a cell with at least ``min_count`` vectors gets its mean rendered as a direction and
    ``crops`` dataset crops beside it.  ``neighbors`` and ``min_dist`` are UMAP's.
    """

    type: ClassVar[str] = "activation_atlas"
    #: ``run_job`` imports it on first use: it registers the runner (torch; this module is not)
    runner_module: ClassVar[str] = "fvdesk.core.actatlas.build"

    root: str
    layer: str
    out: str
    grid: int = 20
    per_image: int = 8
    min_count: int = 3
    seed: int = 0
    max_vectors: int = 0
    crops: int = 6
    neighbors: int = 15
    min_dist: float = 0.05
    classes: bool = True

    def __post_init__(self) -> None:
        for name, lo in (("grid", 1), ("per_image", 1), ("min_count", 1), ("crops", 0),
                         ("neighbors", 2), ("max_vectors", 0)):  # fmt: skip
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"An activation atlas needs {name} >= {lo}, got {v!r}.")
        if not 0.0 <= float(self.min_dist) <= 1.0:
            raise ConfigError(f"UMAP's min_dist is between 0 and 1, got {self.min_dist!r}.")

    def slots(self) -> list[Slot]:
        return []  # its cells are only known once the vectors are laid out

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.layer,)

    @property
    def title(self) -> str:
        return f"activation atlas: {self.layer}"

    def validate(self, graph: Any) -> None:
        lay = graph[self.layer]
        if lay.kind != "feature" or not lay.spatial:
            raise RenderError(
                f"Layer {self.layer} is a {lay.kind} layer without a spatial grid; an activation "
                "atlas samples positions of a feature map (pick a convolutional layer)."
            )

    def recipe(self) -> dict[str, Any]:
        """What decides the atlas's vectors and layout (the output folder does not)."""
        d = self.to_dict()
        d.pop("out", None)
        return d
