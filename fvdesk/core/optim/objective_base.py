"""The objective algebra: ``Objective`` (layers read, one value per image, ``+``, ``-``, scalar
``*``), weighted sums (``Linear``), restriction to one image of a batch, ``Zero``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Literal

import torch

UnitKind = Literal["neuron", "channel", "deepdream", "logit", "prob"]
Activations = Mapping[str, torch.Tensor]


class Objective:
    """Base class: ``obj(acts) -> values [B]`` (maximized), plus arithmetic."""

    layers: tuple[str, ...] = ()
    coupled: bool = False

    def __call__(self, acts: Activations) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return self.describe()

    def main(self) -> Objective | None:
        """The part that is a sum of per-image terms (no batch coupling), or ``None``."""
        return None if self.coupled else self

    def subset(self, start: int, stop: int) -> Objective:
        """The same objective for images ``start:stop`` of the batch, renumbered from 0.

        Lets the renderer split a batch (out of memory, batch-1 models) without changing what
        each image optimizes.  Coupled objectives cannot be split.
        """
        if self.coupled:
            raise ValueError(f"{self.describe()} couples the images of a batch and cannot be split")
        return self

    # -- arithmetic ----------------------------------------------------------------------------
    def __add__(self, other: object) -> Objective:
        if isinstance(other, Real) and other == 0:
            return self
        if not isinstance(other, Objective):
            return NotImplemented
        return Linear([(1.0, self), (1.0, other)])

    def __radd__(self, other: object) -> Objective:
        if isinstance(other, Real) and other == 0:  # sum([...]) starts from 0
            return self
        return NotImplemented

    def __sub__(self, other: object) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Linear([(1.0, self), (-1.0, other)])

    def __mul__(self, k: object) -> Objective:
        if not isinstance(k, Real) or isinstance(k, bool):
            return NotImplemented
        return Linear([(float(k), self)])

    __rmul__ = __mul__

    def __truediv__(self, k: object) -> Objective:
        if not isinstance(k, Real) or isinstance(k, bool) or k == 0:
            return NotImplemented
        return Linear([(1.0 / float(k), self)])

    def __neg__(self) -> Objective:
        return Linear([(-1.0, self)])


def _layers(*objs: Objective) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for o in objs for name in o.layers))


class Linear(Objective):
    """A weighted sum of objectives (what ``+``, ``-``, ``*`` build); nested sums are flattened."""

    def __init__(self, terms: Sequence[tuple[float, Objective]]) -> None:
        flat: list[tuple[float, Objective]] = []
        for w, o in terms:
            if isinstance(o, Linear):
                flat.extend((w * w2, o2) for w2, o2 in o.terms)
            else:
                flat.append((float(w), o))
        self.terms: list[tuple[float, Objective]] = flat
        self.layers = _layers(*(o for _, o in flat))
        self.coupled = any(o.coupled for _, o in flat)

    def __call__(self, acts: Activations) -> torch.Tensor:
        total = None
        for w, o in self.terms:
            v = o(acts)
            v = v if w == 1.0 else v * w
            total = v if total is None else total + v
        assert total is not None
        return total

    def describe(self) -> str:
        parts = []
        for i, (w, o) in enumerate(self.terms):
            sign = "-" if w < 0 else ("+" if i else "")
            mag = abs(w)
            body = o.describe() if mag == 1.0 else f"{mag:g}*{o.describe()}"
            parts.append(f"{sign} {body}".strip() if i else f"{sign}{body}")
        return " ".join(parts)

    def main(self) -> Objective | None:
        kept = [(w, o.main()) for w, o in self.terms]
        kept2 = [(w, o) for w, o in kept if o is not None]
        if not kept2:
            return None
        return Linear(kept2) if len(kept2) != 1 or kept2[0][0] != 1.0 else kept2[0][1]

    def subset(self, start: int, stop: int) -> Objective:
        return Linear([(w, o.subset(start, stop)) for w, o in self.terms])


def _restrict(values: torch.Tensor, batch: int | None) -> torch.Tensor:
    """Keep image ``batch``'s value, zero elsewhere (gradient only reaches that image)."""
    if batch is None:
        return values
    if not -values.shape[0] <= batch < values.shape[0]:
        raise IndexError(f"objective restricted to image {batch} of a batch of {values.shape[0]}")
    mask = torch.zeros_like(values)
    mask[batch] = 1.0
    return values * mask


def _subset_batch(batch: int | None, start: int, stop: int) -> tuple[bool, int | None]:
    """(keep, new index) of a ``batch=`` restriction inside images ``start:stop``."""
    if batch is None:
        return True, None
    if start <= batch < stop:
        return True, batch - start
    return False, None


class Zero(Objective):
    """Contributes nothing (a restricted term whose image is outside a sub-batch)."""

    def __init__(self, layers: tuple[str, ...] = ()) -> None:
        self.layers = layers

    def __call__(self, acts: Activations) -> torch.Tensor:
        a = next(iter(acts.values()))
        return torch.zeros(a.shape[0], device=a.device, dtype=torch.float32)

    def describe(self) -> str:
        return "0"


def check_finite_weight(w: float, what: str) -> float:
    """Validate a user-supplied weight (diversity, alignment) early with a clear message."""
    if not math.isfinite(w):
        raise ValueError(f"the {what} weight must be a finite number, got {w!r}")
    return float(w)
