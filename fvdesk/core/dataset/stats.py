"""Streaming statistics per unit: top-k / bottom-k examples and a histogram of values.

Both consume batches of per-image values ``(B, U)`` and keep memory O(units x k) and
O(units x bins): a dataset of any size is summarized without ever holding its activations.

``StreamingTopK`` keeps, per unit, the ``k`` largest values with the image index and the grid
position each came from.  Ties are broken by the lower image index, so the result equals a full
sort of all values (``-value``, then index) whatever the batch boundaries.

``StreamingHistogram`` bins values on a per-unit grid of power-of-two width anchored at 0; when a
value falls outside the ``bins`` current bins, the width doubles and neighbouring bins merge, so
the histogram stays exact for its resolution (no value is ever re-binned approximately); a view
coarsens it to the width its final range decides, so the same values in any order (shards of a
folder, batches of any size) give the same histogram.  Percentiles interpolate within a bin and are clamped
to the exact minimum and maximum, which are kept alongside with count, mean and variance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


class StreamingTopK:
    """The ``k`` largest values per unit (``largest=False``: the smallest)."""

    def __init__(self, units: int, k: int, *, largest: bool = True) -> None:
        self.units, self.k, self.largest = int(units), max(0, int(k)), largest
        self.values = np.empty((self.units, 0), np.float32)
        self.index = np.empty((self.units, 0), np.int64)
        self.pos = np.empty((self.units, 0), np.int64)

    def update(self, values: np.ndarray, index: np.ndarray, pos: np.ndarray | None = None) -> None:
        """Add a batch: ``values`` (B, U), ``index`` (B,) image indices, ``pos`` (B, U) the
        flat grid position of each value (``None``: 0)."""
        if self.k == 0 or len(values) == 0:
            return
        v = np.asarray(values, np.float32).T  # (U, B)
        idx = np.broadcast_to(np.asarray(index, np.int64)[None, :], v.shape)
        p = np.zeros(v.shape, np.int64) if pos is None else np.asarray(pos, np.int64).T
        allv = np.concatenate([self.values, v], axis=1)
        alli = np.concatenate([self.index, idx], axis=1)
        allp = np.concatenate([self.pos, p], axis=1)
        key = -allv if self.largest else allv
        key = np.where(np.isnan(key), np.inf, key)  # NaN ranks last either way
        # lexsort sorts by the last key first: value, then image index
        order = np.lexsort((alli, key), axis=1)[:, : self.k]
        rows = np.arange(self.units)[:, None]
        self.values, self.index, self.pos = allv[rows, order], alli[rows, order], allp[rows, order]


@dataclass
class HistogramView:
    """One unit's histogram as people read it: bin edges, counts and exact summary numbers."""

    edges: np.ndarray  # (bins + 1,)
    counts: np.ndarray  # (bins,)
    count: int
    minimum: float
    maximum: float
    mean: float
    std: float

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100), interpolated within its bin."""
        if self.count == 0:
            return math.nan
        cum = np.cumsum(self.counts)
        target = q / 100.0 * self.count
        i = int(np.searchsorted(cum, target, side="left"))
        i = min(i, len(self.counts) - 1)
        before = cum[i - 1] if i > 0 else 0
        inside = self.counts[i]
        frac = (target - before) / inside if inside else 0.0
        v = self.edges[i] + frac * (self.edges[i + 1] - self.edges[i])
        return float(min(max(v, self.minimum), self.maximum))

    def fraction_below(self, value: float) -> float:
        """Share of the dataset's values below ``value`` (0-1), interpolated within its bin."""
        if self.count == 0 or not math.isfinite(value):
            return math.nan
        if value <= self.minimum:
            return 0.0
        if value >= self.maximum:
            return 1.0
        i = int(
            np.clip(np.searchsorted(self.edges, value, side="right") - 1, 0, len(self.counts) - 1)
        )
        lo, hi = self.edges[i], self.edges[i + 1]
        part = (value - lo) / (hi - lo) if hi > lo else 1.0
        below = float(self.counts[:i].sum()) + part * float(self.counts[i])
        return below / self.count


_UNSET = np.iinfo(np.int32).min
#: Bins are never narrower than the unit's largest magnitude over 2**_DEPTH (bin indices fit).
_DEPTH = 24


def _log2_width(lo: float, hi: float, bins: int) -> int:
    """The bin width (log2) a range [lo, hi] decides: the narrowest power of two on which it
    spans fewer than ``bins`` bins.  A stream starts at its first batch's width and doubles as
    its range grows, so it never gets wider than its final range's width: a view coarsens to
    that, and the same values in any order (shards of a folder, any batches) give the same
    histogram."""
    mag = max(abs(lo), abs(hi), 1e-30)
    k = max(math.floor(math.log2(max(hi - lo, 1e-300) / bins)), math.ceil(math.log2(mag)) - _DEPTH)
    while math.floor(hi / 2.0**k) - math.floor(lo / 2.0**k) >= bins:
        k += 1
    return k


class StreamingHistogram:
    """Per-unit histograms of ``bins`` bins on a power-of-two grid anchored at zero."""

    def __init__(self, units: int, bins: int = 64) -> None:
        if bins < 2 or bins % 2:
            raise ValueError("the histogram needs an even number of bins >= 2")
        self.units, self.bins = int(units), int(bins)
        self.counts = np.zeros((self.units, self.bins), np.int64)
        self.log2w = np.full(self.units, _UNSET, np.int64)
        self.first = np.zeros(self.units, np.int64)  # index of bin 0 on the unit's grid
        self.n = np.zeros(self.units, np.int64)
        self.total = np.zeros(self.units, np.float64)
        self.total2 = np.zeros(self.units, np.float64)
        self.lo = np.full(self.units, np.inf)
        self.hi = np.full(self.units, -np.inf)

    def update(self, values: np.ndarray) -> None:
        """Add a batch ``(B, U)``; non-finite values are ignored."""
        v = np.asarray(values, np.float64)
        if v.size == 0:
            return
        ok = np.isfinite(v)
        vz = np.where(ok, v, 0.0)
        self.n += ok.sum(0)
        self.total += vz.sum(0)
        self.total2 += (vz * vz).sum(0)
        self.lo = np.minimum(self.lo, np.where(ok, v, np.inf).min(0))
        self.hi = np.maximum(self.hi, np.where(ok, v, -np.inf).max(0))
        unset = (self.log2w == _UNSET) & np.isfinite(self.lo)
        for u in np.flatnonzero(unset):
            self.log2w[u] = _log2_width(float(self.lo[u]), float(self.hi[u]), self.bins)
            self.first[u] = math.floor(self.lo[u] / 2.0 ** self.log2w[u])
        seen = self.log2w != _UNSET
        width = np.exp2(np.where(seen, self.log2w, 0).astype(np.float64))
        a = np.floor(np.where(seen, self.lo, 0) / width)
        b = np.floor(np.where(seen, self.hi, 0) / width)
        for u in np.flatnonzero(seen & ((a < self.first) | (b >= self.first + self.bins))):
            self._fit(int(u))
        width = np.exp2(np.where(seen, self.log2w, 0).astype(np.float64))
        idx = np.floor(vz / width[None, :]).astype(np.int64) - self.first[None, :]
        idx = np.clip(idx, 0, self.bins - 1)
        cols = np.broadcast_to(np.arange(self.units)[None, :], idx.shape)
        np.add.at(self.counts, (cols[ok], idx[ok]), 1)

    def _fit(self, u: int) -> None:
        """Move the unit's window over its running [min, max], doubling the bin width (merging
        neighbouring bins) until that range fits; every earlier value lies inside it."""
        while True:
            w = 2.0 ** float(self.log2w[u])
            a, b = math.floor(self.lo[u] / w), math.floor(self.hi[u] / w)
            if b - a < self.bins:
                nz = np.flatnonzero(self.counts[u])
                moved = np.zeros(self.bins, np.int64)
                moved[self.first[u] + nz - a] = self.counts[u, nz]
                self.counts[u] = moved
                self.first[u] = a
                return
            grid = self.first[u] + np.arange(self.bins)
            new_first = math.floor(self.first[u] / 2)
            merged = np.zeros(self.bins, np.int64)
            np.add.at(merged, grid // 2 - new_first, self.counts[u])
            self.counts[u] = merged
            self.first[u] = new_first
            self.log2w[u] += 1

    def view(self, u: int) -> HistogramView:
        """The histogram of unit ``u`` at its order-independent width (``_log2_width``),
        trimmed to the bins between its minimum and maximum."""
        n = int(self.n[u])
        if n == 0:
            return HistogramView(np.array([0.0, 1.0]), np.zeros(1, np.int64), 0,
                                 math.nan, math.nan, math.nan, math.nan)  # fmt: skip
        k = max(_log2_width(float(self.lo[u]), float(self.hi[u]), self.bins), int(self.log2w[u]))
        nz = np.flatnonzero(self.counts[u])
        grid = (self.first[u] + nz) >> (k - int(self.log2w[u]))  # floor: exact bin merging
        a = int(grid[0])
        counts = np.bincount(grid - a, weights=self.counts[u, nz]).astype(np.int64)
        edges = (a + np.arange(len(counts) + 1)) * 2.0**k
        mean = self.total[u] / n
        var = max(self.total2[u] / n - mean * mean, 0.0)
        return HistogramView(edges.astype(np.float64), counts, n,
                             float(self.lo[u]), float(self.hi[u]), float(mean), math.sqrt(var))  # fmt: skip
