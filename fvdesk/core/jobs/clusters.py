"""Facets from dataset clusters: what different kinds of images excite a unit (Wei et al. 2015).

The unit's top examples (``pool`` of them) are run through the model once more to read the
layer's whole activation vector where the unit fired most (for a class logit: the spatially
averaged vector of the last feature map before it, as the diversity term uses); a seeded
spherical k-means groups them into ``facets`` clusters; each centroid becomes one facet of a
``ClusterJob``, rendered as the unit objective plus a cosine term toward the centroid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fvdesk.core.dataset.examples import Example, LayerExamples
from fvdesk.core.dataset.kmeans import kmeans
from fvdesk.core.errors import DatasetError
from fvdesk.core.imagefolder import ImageSkipped, fit_image
from fvdesk.core.jobs.job import DEFAULT_CLUSTER_WEIGHT, ClusterJob, default_kind
from fvdesk.core.jobs.run import diversity_layer
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.preprocessing import Preprocessing

#: How many top examples are clustered (the pass must keep at least this many: ``top``).
DEFAULT_POOL = 32


@dataclass
class Clusters:
    """The job that renders the facets and each facet's examples (most excited first)."""

    job: ClusterJob
    members: list[list[Example]]


@torch.no_grad()
def cluster_vectors(
    model: LoadedModel, examples: LayerExamples, unit: int, *, pool: int = DEFAULT_POOL,
    pre: Preprocessing | None = None,
) -> tuple[np.ndarray, list[Example], str, bool]:  # fmt: skip
    """Activation vectors of ``unit``'s top ``pool`` examples: ``(vectors (n, C), examples,
    cluster layer, pooled)``; examples whose file can no longer be read are left out."""
    layer = model.graph[examples.layer]
    pooled = layer.kind != "feature"
    target = diversity_layer(model, layer.name) if pooled else layer.name
    h, w = int(model.input.height), int(model.input.width)
    kept, pixels = [], []
    for ex in examples.unit(unit, top=pool).top:
        try:
            px, _ = fit_image(examples.root / ex.rel, h, w)
        except (ImageSkipped, OSError):
            continue
        kept.append(ex)
        pixels.append(px)
    if not kept:
        raise DatasetError(f"None of the top examples of {layer.name}:{unit} can be read any more.")
    ext = model.extractor([target])
    vectors = []
    dev = model.device
    for i in range(0, len(pixels), 32):
        x = torch.from_numpy(np.stack(pixels[i : i + 32])).to(dev).permute(0, 3, 1, 2).float() / 255
        act = ext(model.prepare_input(x, pre))[target].float()
        for k, ex in enumerate(kept[i : i + 32]):
            a = act[k]
            v = (
                a.flatten(1).mean(-1)
                if pooled and a.dim() > 1
                else a
                if a.dim() == 1
                else a[:, ex.grid[0], ex.grid[1]]
            )
            vectors.append(v.cpu().numpy())
    return np.stack(vectors).astype(np.float32), kept, target, pooled


def cluster_facets(
    model: LoadedModel, examples: LayerExamples, unit: int, facets: int, *,
    pool: int = DEFAULT_POOL, seed: int = 0, weight: float = DEFAULT_CLUSTER_WEIGHT,
    pre: Preprocessing | None = None,
) -> Clusters:  # fmt: skip
    """The ``ClusterJob`` rendering one facet per cluster of ``unit``'s top examples (fewer
    facets when fewer distinct examples exist)."""
    vectors, kept, target, pooled = cluster_vectors(model, examples, unit, pool=pool, pre=pre)
    centroids, labels = kmeans(vectors, facets, seed=seed)
    members = [
        [ex for ex, lab in zip(kept, labels, strict=True) if lab == j]
        for j in range(len(centroids))
    ]
    cents = tuple(tuple(float(v) for v in c.astype(np.float32)) for c in centroids)
    job = ClusterJob(
        examples.layer,
        unit,
        cents,
        target,
        kind=default_kind(model.graph[examples.layer]),
        pooled=pooled,
        weight=weight,
        dataset=str(examples.root),
        members=tuple(tuple(ex.rel for ex in m) for m in members),
    )
    return Clusters(job, members)
