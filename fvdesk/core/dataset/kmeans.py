"""A small seeded k-means for clustering a unit's top examples (tens of vectors, not millions).

Spherical by default: vectors are scaled to unit length first, so clusters group examples by the
*direction* of their activation vector (which channels fire together), not by how strongly the
unit fired; that is the quantity the cluster facets are steered toward (a cosine term).
k-means++ seeding from a ``numpy`` generator makes the result a function of the seed.
"""

from __future__ import annotations

import numpy as np


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    n_init: int = 8,
    iters: int = 100,
    spherical: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster the rows of ``x`` (n, d) into ``k`` groups: ``(centroids (k, d), labels (n,))``.

    The best of ``n_init`` k-means++ starts (lowest within-cluster sum of squares) is kept.
    With ``spherical`` rows and centroids have unit length.  ``k`` larger than the number of
    distinct rows is reduced to it (a cluster is never empty).
    """
    a = np.asarray(x, np.float64)
    if a.ndim != 2 or len(a) == 0:
        raise ValueError("k-means needs a non-empty (n, d) array")
    if spherical:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    k = max(1, min(int(k), len(np.unique(a.round(12), axis=0))))
    rng = np.random.default_rng(seed)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(max(1, n_init)):
        c = _plus_plus(a, k, rng)
        labels = np.zeros(len(a), np.int64)
        for it in range(iters):
            d = _sqdist(a, c)
            new = d.argmin(1)
            if it and (new == labels).all():
                break
            labels = new
            for j in range(k):
                members = a[labels == j]
                if len(members):
                    c[j] = members.mean(0)
                else:  # re-seed an emptied cluster at the worst-served point
                    far = int(d.min(1).argmax())
                    c[j] = a[far]
                    labels[far] = j
            if spherical:
                c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
        inertia = float(_sqdist(a, c)[np.arange(len(a)), labels].sum())
        if best is None or inertia < best[0] - 1e-12:
            best = (inertia, c.copy(), labels.copy())
    assert best is not None
    _, centroids, labels = best
    # a stable order: largest cluster first, then by first member
    order = sorted(range(k), key=lambda j: (-(labels == j).sum(), int(np.argmax(labels == j))))
    remap = np.empty(k, np.int64)
    remap[order] = np.arange(k)
    return centroids[order], remap[labels]


def _plus_plus(a: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    c = [a[int(rng.integers(len(a)))]]
    for _ in range(1, k):
        d = _sqdist(a, np.array(c)).min(1)
        total = d.sum()
        i = int(rng.choice(len(a), p=d / total)) if total > 0 else int(rng.integers(len(a)))
        c.append(a[i])
    return np.array(c, np.float64)


def _sqdist(a: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.maximum((a * a).sum(1)[:, None] - 2 * a @ c.T + (c * c).sum(1)[None, :], 0.0)
