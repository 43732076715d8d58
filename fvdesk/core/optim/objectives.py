"""Objectives: what a render maximizes, composable with ``+``, ``-`` and scalar ``*``.

An objective declares the layers it reads (``.layers``, node names of the ``LayerGraph``, never
Python objects) and maps ``{layer: activation}`` to one value per image, a tensor ``[B]``.  The
render loop asks ``model.extractor(objective.layers)`` once, so the model is cut after the last
layer any term needs, and maximizes ``sum(values)``.

Per-image values (rather than one scalar) are what make batched renders useful: every image of a
batch can hold its own unit (``batch=i`` restricts a term to image ``i``; a sequence of units
gives image ``b`` unit ``units[b]``), the GUI shows each image's progress, and dead units are
detected per image.

Terms (the article's list): ``neuron`` (``layer[x, y, z]``, centre by default), ``channel``
(mean of ``layer[:, :, z]``), ``deepdream`` (mean of ``layer**2``), ``logit`` (``pre_softmax[k]``),
``probability`` (``softmax[k]``), ``direction`` (dot product with a channel-space vector),
``random_direction``, ``negative`` (minimize anything), ``steer`` (a unit plus a cosine term
toward a vector: dataset-cluster facets), ``diversity`` (negative pairwise cosine
similarity of Gram matrices across the batch), ``interpolate`` (linear blend of two objectives
across the batch) and ``alignment`` (neighbouring images' activations alike).  Diversity and
alignment couple images of a batch (``coupled``): they cannot be split across batches, and
dead-unit detection ignores them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fvdesk.core.errors import ChannelMismatchError, RenderError
from fvdesk.core.model.layers import token_target
from fvdesk.core.optim.coupling import (  # noqa: F401 - the objectives in one import
    Alignment,
    Diversity,
    Interpolate,
    WithCoupling,
    WithDiversity,
    _Coupling,
    alignment,
    diversity,
    interpolate,
    with_diversity,
)
from fvdesk.core.optim.objective_base import (  # noqa: F401
    Activations,
    Linear,
    Objective,
    UnitKind,
    Zero,
    _layers,
    _restrict,
    _subset_batch,
    check_finite_weight,
)


class Unit(Objective):
    """One unit per image of a layer: neuron, channel, logit, probability, or the whole layer.

    ``unit`` is an int (every image the same unit) or a sequence with one unit per image.
    """

    def __init__(
        self,
        layer: str,
        kind: UnitKind,
        unit: int | Sequence[int] | None = None,
        *,
        x: int | None = None,
        y: int | None = None,
        batch: int | None = None,
    ) -> None:
        if kind not in ("neuron", "channel", "deepdream", "logit", "prob"):
            raise ValueError(f"unknown objective kind {kind!r}")
        if kind != "deepdream" and unit is None:
            raise ValueError(f"a {kind} objective needs a unit index")
        self.layer, self.kind, self.x, self.y, self.batch = layer, kind, x, y, batch
        self.unit: int | tuple[int, ...] | None = (
            None
            if unit is None
            else int(unit)
            if isinstance(unit, int)
            else tuple(int(u) for u in unit)
        )
        self.layers = (layer,)
        self._checked = -1  # channel count the unit indices were validated against
        self._cache: dict[tuple[str, torch.device, int], torch.Tensor] = {}

    def _index(self, device: torch.device) -> torch.Tensor:
        """The per-image unit indices as a tensor on ``device`` (made once, not every step)."""
        key = ("units", device, 0)
        if key not in self._cache:
            self._cache[key] = torch.tensor(self.unit, device=device)
        return self._cache[key]

    def _rows(self, b: int, device: torch.device) -> torch.Tensor:
        key = ("rows", device, b)
        if key not in self._cache:
            self._cache[key] = torch.arange(b, device=device)
        return self._cache[key]

    def describe(self) -> str:
        u = "" if self.unit is None else f", {self.unit}"
        at = "" if self.x is None and self.y is None else f" at ({self.x}, {self.y})"
        b = "" if self.batch is None else f" [image {self.batch}]"
        return f"{self.kind}({self.layer}{u}){at}{b}"

    def _per_channel(self, act: torch.Tensor) -> torch.Tensor:
        """(B, C) measure of every channel (used when all channels are needed: prob)."""
        if self.kind == "neuron" and act.dim() == 4:
            x, y = self._position(act)
            return act[:, :, y, x]
        return act.flatten(2).mean(-1) if act.dim() > 2 else act

    def _position(self, act: torch.Tensor) -> tuple[int, int]:
        """(x, y) of a neuron objective, checked against the grid of this render: the grid shrinks
        with the canvas, so a position picked at the model's size may not exist here."""
        x, y = self._xx(act), self._yy(act)
        h, w = act.shape[-2:]
        if not (0 <= x < w and 0 <= y < h):
            raise RenderError(
                f"The neuron position ({x}, {y}) is outside {self.layer}'s {w}x{h} grid at this "
                f"canvas size; choose x < {w} and y < {h}, or a larger canvas."
            )
        return x, y

    def _xx(self, act: torch.Tensor) -> int:
        return act.shape[3] // 2 if self.x is None else self.x

    def _yy(self, act: torch.Tensor) -> int:
        return act.shape[2] // 2 if self.y is None else self.y

    def __call__(self, acts: Activations) -> torch.Tensor:
        act = acts[self.layer].float()
        b = act.shape[0]
        if self.kind == "deepdream":
            return _restrict(act.pow(2).flatten(1).mean(1), self.batch)
        units = self.unit
        if isinstance(units, tuple) and len(units) != b:
            raise ValueError(f"{self.describe()} has {len(units)} units for a batch of {b}")
        n = act.shape[1]
        if self._checked != n:
            for u in units if isinstance(units, tuple) else (units,):
                if not 0 <= u < n:  # type: ignore[operator]  # a unit is an int for these kinds
                    raise IndexError(f"unit {u} is out of range: {self.layer} has {n} channels")
            self._checked = n
        if self.kind == "prob":
            m = torch.softmax(self._per_channel(act), dim=1)
            if isinstance(units, int):
                v = m[:, units]
            else:
                v = m[self._rows(b, m.device), self._index(m.device)]
            return _restrict(v, self.batch)
        if isinstance(units, int):
            sel = act[:, units]
        else:
            sel = act[self._rows(b, act.device), self._index(act.device)]
        if sel.dim() == 1:  # vector layer
            v = sel
        elif self.kind == "neuron" and sel.dim() == 3:
            x, y = self._position(act)
            v = sel[:, y, x]
        else:
            v = sel.flatten(1).mean(1)
        return _restrict(v, self.batch)

    def subset(self, start: int, stop: int) -> Objective:
        keep, b = _subset_batch(self.batch, start, stop)
        if not keep:
            return Zero(self.layers)
        unit = self.unit[start:stop] if isinstance(self.unit, tuple) else self.unit
        return Unit(self.layer, self.kind, unit, x=self.x, y=self.y, batch=b)


def neuron(
    layer: str,
    z: int | Sequence[int],
    x: int | None = None,
    y: int | None = None,
    *,
    token: int | None = None,
    batch: int | None = None,
) -> Objective:
    """``layer[x, y, z]`` (centre position by default): one spatial position of one channel.

    For a token layer (a vision transformer) positions are patches of its grid; ``token=k``
    picks extra token ``k`` instead (0: the class token), read as ``layer#k``.
    """
    if token is not None:
        if x is not None or y is not None:
            raise ValueError("a neuron objective takes a patch (x, y) or a token, not both")
        return Unit(token_target(layer, token), "neuron", z, batch=batch)
    return Unit(layer, "neuron", z, x=x, y=y, batch=batch)


def channel(layer: str, z: int | Sequence[int], *, batch: int | None = None) -> Objective:
    """Mean of ``layer[:, :, z]``: the article's default objective."""
    return Unit(layer, "channel", z, batch=batch)


def deepdream(layer: str, *, batch: int | None = None) -> Objective:
    """Mean of ``layer**2``: what the whole layer finds 'interesting'."""
    return Unit(layer, "deepdream", None, batch=batch)


def logit(layer: str, k: int | Sequence[int], *, batch: int | None = None) -> Objective:
    """Class logit ``pre_softmax[k]`` (spatial mean for fully convolutional classifiers)."""
    return Unit(layer, "logit", k, batch=batch)


def probability(layer: str, k: int | Sequence[int], *, batch: int | None = None) -> Objective:
    """Class probability ``softmax(layer)[k]`` (softmax over the channel axis)."""
    return Unit(layer, "prob", k, batch=batch)


def negative(objective: Objective) -> Objective:
    """Minimize instead of maximize: the 'opposite' example."""
    return -objective


def unit(
    layer: str, kind: UnitKind, z: int | Sequence[int] | None, *, batch: int | None = None
) -> Objective:
    """The objective of a ``UnitJob`` kind by name."""
    return Unit(layer, kind, z, batch=batch)


def _channels_changed(layer: str, here: int, made: int, what: str) -> ChannelMismatchError:
    """Vectors read from the model are checked against the layer at the model's size, so a
    mismatch at render time is most often a layer whose channel axis follows the canvas (a
    transformer's token axis): the sentence says so."""
    return ChannelMismatchError(
        f"{layer} has {here} channels at this canvas size but the {what} has {made}; a layer "
        "whose channel axis follows the input size (a transformer's tokens) must be rendered at "
        "the size its vectors were read at."
    )


class Direction(Objective):
    """Mean over positions of ``layer[x, y, :] . vector``: a direction in channel space.

    ``vector`` is one direction (C,) for every image, or one row per image (B, C).
    """

    def __init__(
        self, layer: str, vector: Sequence[float] | torch.Tensor, *, batch: int | None = None
    ) -> None:
        self.layer, self.batch = layer, batch
        v = torch.as_tensor(vector, dtype=torch.float32)
        self.vector = v if v.dim() == 2 else v.flatten()
        self.layers = (layer,)

    @property
    def size(self) -> int:
        return int(self.vector.shape[-1])

    def describe(self) -> str:
        b = "" if self.batch is None else f" [image {self.batch}]"
        return f"direction({self.layer}, {self.size}-d){b}"

    def __call__(self, acts: Activations) -> torch.Tensor:
        act = acts[self.layer].float()
        if act.shape[1] != self.size:
            raise _channels_changed(self.layer, act.shape[1], self.size, "direction")
        rows = self.vector.shape[0] if self.vector.dim() == 2 else 1
        if self.vector.dim() == 2 and rows != act.shape[0]:
            raise ValueError(
                f"{self.describe()} has {rows} directions for a batch of {act.shape[0]}"
            )
        v = self.vector.to(act.device).view(rows, -1, *([1] * (act.dim() - 2)))
        dot = (act * v).sum(1)
        return _restrict(dot.flatten(1).mean(1) if dot.dim() > 1 else dot, self.batch)

    def subset(self, start: int, stop: int) -> Objective:
        keep, b = _subset_batch(self.batch, start, stop)
        v = self.vector[start:stop] if self.vector.dim() == 2 else self.vector
        return Direction(self.layer, v, batch=b) if keep else Zero(self.layers)


def direction(
    layer: str, vector: Sequence[float] | torch.Tensor, *, batch: int | None = None
) -> Objective:
    """Dot product with ``vector`` (length = the layer's channels), averaged over positions."""
    return Direction(layer, vector, batch=batch)


def random_direction(
    layer: str, channels: int, seed: int = 0, *, batch: int | None = None
) -> Objective:
    """A seeded random unit vector in the layer's channel space (Szegedy et al.'s experiment)."""
    g = torch.Generator().manual_seed(int(seed))
    v = torch.randn(channels, generator=g)
    return Direction(layer, v / v.norm(), batch=batch)


class CosineTo(Objective):
    """Cosine similarity of the layer's activation vectors to one target vector per image.

    Per position (the mean over the grid of ``cos(act[:, y, x], v)``), or of the spatially
    averaged vector when ``pooled`` (and always for vector layers).  Image ``b`` uses
    ``vectors[b]``; with a single vector every image uses it.
    """

    def __init__(self, layer: str, vectors: Sequence[Sequence[float]] | torch.Tensor,
                 *, pooled: bool = False) -> None:  # fmt: skip
        self.layer, self.pooled = layer, bool(pooled)
        v = torch.as_tensor(vectors, dtype=torch.float32)
        self.vectors = v.unsqueeze(0) if v.dim() == 1 else v
        self.layers = (layer,)

    def describe(self) -> str:
        return f"cos({self.layer}, {self.vectors.shape[0]}x{self.vectors.shape[1]}-d)"

    def __call__(self, acts: Activations) -> torch.Tensor:
        act = acts[self.layer].float()
        b, c = act.shape[0], act.shape[1]
        v = self.vectors.to(act.device)
        if v.shape[1] != c:
            raise _channels_changed(self.layer, c, v.shape[1], "target")
        v = v.expand(b, -1) if v.shape[0] == 1 else v
        if v.shape[0] != b:
            raise ValueError(f"{self.describe()} has {v.shape[0]} vectors for a batch of {b}")
        if self.pooled or act.dim() == 2:
            a = act.flatten(2).mean(-1) if act.dim() > 2 else act
            return torch.nn.functional.cosine_similarity(a, v, dim=1, eps=1e-8)
        vv = v.view(b, c, *([1] * (act.dim() - 2)))
        cos = torch.nn.functional.cosine_similarity(act, vv.expand_as(act), dim=1, eps=1e-8)
        return cos.flatten(1).mean(1)

    def subset(self, start: int, stop: int) -> Objective:
        vs = self.vectors if self.vectors.shape[0] == 1 else self.vectors[start:stop]
        return CosineTo(self.layer, vs, pooled=self.pooled)


class Steered(Objective):
    """``main + weight * |main| * term`` per image, ``|main|`` detached (floored at 1e-3).

    Steers a unit objective toward something (a cluster centroid's direction) with a weight
    relative to the unit's own magnitude, so one weight suits every model and layer, as
    ``WithDiversity`` does for the diversity term.  Per image: batches split freely.  ``main()``
    is the unit objective alone, so the value a result reports is the unit's.
    """

    def __init__(self, main: Objective, term: Objective, weight: float) -> None:
        if main.coupled or term.coupled:
            raise ValueError("steer combines per-image objectives")
        self.inner, self.term, self.weight = main, term, float(weight)
        self.layers = _layers(main, term)

    def describe(self) -> str:
        return f"{self.inner.describe()} + {self.weight:g}*|.|*{self.term.describe()}"

    def main(self) -> Objective | None:
        return self.inner

    def __call__(self, acts: Activations) -> torch.Tensor:
        v = self.inner(acts)
        return v + self.weight * v.detach().abs().clamp_min(1e-3) * self.term(acts)

    def subset(self, start: int, stop: int) -> Objective:
        return Steered(self.inner.subset(start, stop), self.term.subset(start, stop), self.weight)


def steer(main: Objective, layer: str, vectors: Sequence[Sequence[float]] | torch.Tensor,
          weight: float = 1.0, *, pooled: bool = False) -> Objective:  # fmt: skip
    """``main`` plus a cosine term toward ``vectors`` on ``layer`` (one per image; see
    ``Steered``): how a dataset-cluster facet is rendered."""
    return Steered(main, CosineTo(layer, vectors, pooled=pooled), weight)
