"""From vectors to an atlas: UMAP to 2-D, the grid of cells, and the class each cell supports."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from fvdesk.core.errors import ConfigError
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.model.preprocessing import Preprocessing

MISSING_UMAP = (
    "The activation atlas needs umap-learn, which is not installed; install it with "
    "`pip install 'fvdesk[atlas]'` (or `pip install umap-learn`)."
)


def reduce_2d(vectors: np.ndarray, *, seed: int, neighbors: int, min_dist: float) -> np.ndarray:
    """UMAP with the cosine metric (as Carter et al.), seeded, so a CPU rerun gives the same map."""
    try:
        import umap
    except ImportError:
        raise ConfigError(MISSING_UMAP) from None
    n = len(vectors)
    if n < 4:
        raise ConfigError(f"An activation atlas needs at least 4 vectors to lay out, got {n}.")
    reducer = umap.UMAP(n_components=2, n_neighbors=min(neighbors, n - 1), min_dist=min_dist,
                        metric="cosine", random_state=int(seed), n_jobs=1,
                        init="spectral" if n > neighbors + 2 else "random")  # fmt: skip
    x = vectors.astype(np.float32)
    dead = ~np.any(x != 0, axis=1)  # all-zero vectors have no cosine; nudge them apart from none
    if dead.any():
        x = x.copy()
        x[dead] = 1e-6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden by random_state", numba notes
        return np.asarray(reducer.fit_transform(x), dtype=np.float64)


@dataclass
class Cell:
    """One grid cell with enough vectors: ``i`` column, ``j`` row (0 at the top), its members
    (indices into the collection) and their mean."""

    id: int
    i: int
    j: int
    members: np.ndarray
    mean: np.ndarray
    crops: list[int] = field(default_factory=list)  # members closest to the mean, best first


def grid_cells(coords: np.ndarray, vectors: np.ndarray, grid: int, min_count: int,
               crops: int) -> tuple[list[Cell], np.ndarray, tuple[float, ...]]:  # fmt: skip
    """Cells of a ``grid`` x ``grid`` lattice over the map's bounding box; returns the cells, each
    vector's cell index (row-major, -1 none) and the box ``(x0, y0, x1, y1)``."""
    lo, hi = coords.min(0), coords.max(0)
    span = np.where(hi > lo, hi - lo, 1.0)
    u = np.clip(((coords - lo) / span * grid).astype(np.int64), 0, grid - 1)
    flat = u[:, 1] * grid + u[:, 0]  # row j from the map's y, column i from its x
    cells: list[Cell] = []
    owner = np.full(len(coords), -1, np.int64)
    for key in np.unique(flat):
        members = np.flatnonzero(flat == key)
        if len(members) < min_count:
            continue
        mean = vectors[members].astype(np.float64).mean(0)
        if not np.any(mean):
            continue
        v = vectors[members].astype(np.float64)
        cos = v @ mean / (np.linalg.norm(v, axis=1) * np.linalg.norm(mean) + 1e-12)
        best = members[np.argsort(-cos, kind="stable")[:crops]]
        owner[members] = len(cells)
        cells.append(Cell(len(cells), int(key % grid), int(key // grid), members, mean,
                          [int(b) for b in best]))  # fmt: skip
    return cells, owner, (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


@contextlib.contextmanager
def _layer_replaced(model: LoadedModel, layer: str, value: torch.Tensor) -> Iterator[None]:
    """The full module with ``layer``'s output replaced by ``value`` during the forward."""
    nodes = {n.name: n for n in model.module.graph.nodes}
    node = nodes[model.node_of_layer[model.graph[layer].name]]
    if node.op != "call_module":
        raise ConfigError(f"Layer {layer} is not a module output, so no forward can start there.")
    mod = dict(model.module.named_modules())[node.target]
    handle = mod.register_forward_hook(lambda _m, _i, out: value.to(out.dtype).expand_as(out))
    try:
        yield
    finally:
        handle.remove()


def class_support(model: LoadedModel, layer: str, means: np.ndarray, pre: Preprocessing,
                  device: torch.device) -> np.ndarray | None:  # fmt: skip
    """(cells, classes): each cell's logits when its mean vector fills the layer at every
    position, less the logits of the atlas's overall mean vector there (a forward from the layer;
    the image fed in no longer matters).  ``None`` where the model has no logits, the layer is
    channels-last or not a module output."""
    logits = model.graph.logits
    lay = model.graph[layer]
    if logits is None or lay.layout == "NHWC" or not len(means):
        return None
    h, w = int(model.input.height), int(model.input.width)
    base = means.mean(0, keepdims=True)
    rows = np.concatenate([base, means]).astype(np.float32)
    out = []
    try:
        ext = model.extractor([logits.name])  # shares the full module's submodules (and hooks)
        with torch.inference_mode():
            for s in range(0, len(rows), 64):
                v = torch.from_numpy(rows[s : s + 64]).to(device)[:, :, None, None]
                x = model.prepare_input(torch.full((len(v), 3, h, w), 0.5, device=device), pre)
                with _layer_replaced(model, layer, v):
                    z = ext(x)[logits.name]
                out.append(z.float().flatten(1).cpu().numpy())
    except (ConfigError, RuntimeError, KeyError, ValueError):
        return None
    z = np.concatenate(out).astype(np.float64)
    return z[1:] - z[:1]


def top_units(mean: np.ndarray, k: int = 5) -> list[tuple[int, float]]:
    order = np.argsort(-mean, kind="stable")[:k]
    return [(int(u), float(mean[u])) for u in order]


def describe_share(cells: list[Cell], groups: Any) -> float:
    """The share of cells whose members are >= 80 % one group (``groups``: one label per vector)."""
    if not cells:
        return 0.0
    pure = 0
    for c in cells:
        _, counts = np.unique(np.asarray(groups)[c.members], return_counts=True)
        pure += counts.max() >= 0.8 * len(c.members)
    return pure / len(cells)
