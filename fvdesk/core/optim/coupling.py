"""Objectives that couple the images of a batch (diversity, alignment, interpolation): they
cannot be split across batches, and dead-unit detection reads only their per-image part
(``main``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fvdesk.core.optim.objective_base import (
    Activations,
    Objective,
    _layers,
)


class _Coupling(Objective):
    """A term on one layer that ties the images of a batch together (cannot be split)."""

    coupled = True
    name = ""

    def __init__(self, layer: str) -> None:
        self.layer = layer
        self.layers = (layer,)

    def describe(self) -> str:
        return f"{self.name}({self.layer})"


class Diversity(_Coupling):
    """``-sum_{a != b} cos(vec(G_a), vec(G_b)) / n`` within each group of images (article, Lucid).

    ``G`` is the per-image Gram matrix of the layer's channels.  Each image's value is its share
    (its row of the similarity matrix), so the per-image values sum to Lucid's batch term.
    """

    name = "diversity"

    def __init__(self, layer: str, groups: Sequence[Sequence[int]] | None = None) -> None:
        super().__init__(layer)
        self.groups = None if groups is None else [list(g) for g in groups]

    def __call__(self, acts: Activations) -> torch.Tensor:
        act = acts[self.layer].float()
        b = act.shape[0]
        feats = act.flatten(2) if act.dim() > 2 else act.unsqueeze(-1)  # (B, C, P)
        grams = torch.bmm(feats, feats.transpose(1, 2)).flatten(1)  # (B, C*C)
        grams = grams / (grams.norm(dim=1, keepdim=True) + 1e-10)
        out = torch.zeros(b, device=act.device, dtype=act.dtype)
        for g in self.groups if self.groups is not None else [list(range(b))]:
            n = len(g)
            if n < 2:
                continue
            idx = torch.tensor(g, device=act.device)
            gg = grams[idx]
            sim = gg @ gg.T
            off = sim.sum(1) - sim.diagonal()
            out = out.index_add(0, idx, -off / n)
        return out


def diversity(layer: str, groups: Sequence[Sequence[int]] | None = None) -> Objective:
    """The article's diversity term over the batch (or within each group of batch indices)."""
    return Diversity(layer, groups)


class WithCoupling(Objective):
    """``main + weight * scale * coupling`` where ``scale`` is the current mean ``|main|`` of the
    group (detached), so one weight works whatever the layer's activation magnitude.

    Lucid's absolute weights (``channel - 1e2 * diversity``) suit GoogLeNet's mixed4a, whose
    activations are large; on a small model they swamp the unit objective (facets that no longer
    excite the unit).  Scaling by the objective keeps the balance the same on every model.
    """

    coupled = True

    def __init__(
        self,
        main: Objective,
        coupling: Objective,
        weight: float,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        if main.coupled:
            raise ValueError("a coupling term needs a per-image main objective")
        self.inner, self.coupling = main, coupling
        self.weight = float(weight)
        self.groups = None if groups is None else [list(g) for g in groups]
        self.layers = _layers(main, coupling)

    def describe(self) -> str:
        return f"{self.inner.describe()} + {self.weight:g}*|.|*{self.coupling.describe()}"

    def main(self) -> Objective | None:
        return self.inner

    def __call__(self, acts: Activations) -> torch.Tensor:
        v = self.inner(acts)
        d = self.coupling(acts)
        mag = v.detach().abs()
        scale = torch.zeros_like(mag)
        for g in self.groups if self.groups is not None else [list(range(v.shape[0]))]:
            idx = torch.tensor(g, device=v.device)
            scale[idx] = mag[idx].mean().clamp_min(1e-3)
        return v + self.weight * scale * d


class WithDiversity(WithCoupling):
    """``main`` plus the diversity term, weighted relative to ``main`` (``WithCoupling``)."""

    def __init__(
        self,
        main: Objective,
        layer: str,
        weight: float,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        super().__init__(main, Diversity(layer, groups), weight, groups)
        self.diversity = self.coupling


def with_diversity(
    main: Objective, layer: str, weight: float = 1.25, groups: Sequence[Sequence[int]] | None = None
) -> Objective:
    """``main`` plus the diversity term, weighted relative to ``main``'s magnitude (see class)."""
    return WithDiversity(main, layer, weight, groups)


class Alignment(_Coupling):
    """Neighbouring images' activations alike: ``-sum_d sum_i mean((a_i - a_{i+d})**2) / r**d``.

    Used with ``interpolate`` so the images of an interpolation line up (Lucid's alignment,
    distances 1..4).  Each pair's penalty is split between its two images.
    """

    name = "alignment"

    def __init__(self, layer: str, decay_ratio: float = 2.0, *, relative: bool = False) -> None:
        super().__init__(layer)
        self.decay_ratio = float(decay_ratio)
        self.relative = relative  # divide by the (detached) mean square activation: unitless

    def __call__(self, acts: Activations) -> torch.Tensor:
        act = acts[self.layer].float()
        b = act.shape[0]
        flat = act.flatten(1)
        if self.relative:
            flat = flat / flat.detach().pow(2).mean().sqrt().clamp_min(1e-6)
        out = torch.zeros(b, device=act.device, dtype=act.dtype)
        for d in range(1, min(4, b - 1) + 1):
            diff = (flat[:-d] - flat[d:]).pow(2).mean(1) / self.decay_ratio**d  # (b - d,)
            out = out.index_add(0, torch.arange(b - d, device=act.device), -0.5 * diff)
            out = out.index_add(0, torch.arange(d, b, device=act.device), -0.5 * diff)
        return out


def alignment(layer: str, decay_ratio: float = 2.0, *, relative: bool = False) -> Objective:
    """The interpolation alignment term (maximize = neighbouring images alike)."""
    return Alignment(layer, decay_ratio, relative=relative)


class Interpolate(Objective):
    """Image ``i`` of ``n`` maximizes ``(1 - t_i) * a + t_i * b`` with ``t_i = i / (n - 1)``."""

    def __init__(self, a: Objective, b: Objective, n: int, *, start: int = 0) -> None:
        if a.coupled or b.coupled:
            raise ValueError(
                "interpolate blends per-image objectives; add coupled terms separately"
            )
        if n < 1:
            raise ValueError("an interpolation needs at least one image")
        self.a, self.b, self.n, self.start = a, b, int(n), int(start)
        self.layers = _layers(a, b)

    def describe(self) -> str:
        return f"interpolate({self.a.describe()} -> {self.b.describe()}, {self.n})"

    def weights(self, b: int, device: torch.device) -> torch.Tensor:
        idx = torch.arange(self.start, self.start + b, device=device, dtype=torch.float32)
        return idx / max(self.n - 1, 1)

    def __call__(self, acts: Activations) -> torch.Tensor:
        va, vb = self.a(acts), self.b(acts)
        t = self.weights(va.shape[0], va.device)
        return (1.0 - t) * va + t * vb

    def subset(self, start: int, stop: int) -> Objective:
        return Interpolate(
            self.a.subset(start, stop), self.b.subset(start, stop), self.n, start=self.start + start
        )


def interpolate(a: Objective, b: Objective, n: int) -> Objective:
    """Linear blend from ``a`` (first image) to ``b`` (last image) across a batch of ``n``."""
    return Interpolate(a, b, n)
