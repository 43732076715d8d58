"""Objectives that start from, and stay near, one image: feature accentuation and inversion.

Accentuation (Hamblin, Fel et al. 2024) maximizes a unit minus a penalty for leaving the image:
in the activations of an earlier layer (a term of the objective like any other) or in pixels.
The pixel penalty reads the image being optimized, which no objective sees (objectives map
activations to values); the render loop adds ``objective.image_penalty(x01)`` to its loss when an
objective has one (``fvdesk.core.optim.render``, one guarded line), and nothing else changes.

Inversion (Mahendran & Vedaldi 2015) matches the image's activations at a layer: Lucid's
``dot_compare``, the dot product with the target times the cosine similarity to a power (0: the
dot product alone, which exaggerates what the layer sees: the caricature).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fvdesk.core.optim import objectives as obj

#: A 10 % RMS change in every pixel, as a mean squared difference: the pixel penalty's unit.
PIXEL_SCALE = 0.01


def _resized(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` (1, C, h, w) at ``like``'s spatial size (transforms may change it)."""
    t = t.to(like.device)
    if t.dim() == 4 and t.shape[-2:] != like.shape[-2:]:
        t = F.interpolate(t, size=like.shape[-2:], mode="bilinear", align_corners=False)
    return t


class Accentuation(obj.Objective):
    """``unit - weight * scale * distance``: ``scale`` per image (the unit's value on the image,
    so the weight means the same for every unit); ``distance`` the mean squared difference to
    ``target`` in pixels (``image_penalty``) or, with ``layer``, to the image's activations
    there relative to their mean square."""

    def __init__(self, unit: obj.Objective, target: torch.Tensor, weight: float,
                 scale: torch.Tensor, layer: str | None = None) -> None:  # fmt: skip
        self.unit, self.target, self.weight = unit, target.detach(), float(weight)
        self.scale, self.layer = scale.detach().float(), layer
        self.layers = tuple(dict.fromkeys((*unit.layers, *((layer,) if layer else ()))))
        self.image_penalty = None if layer else self._pixels

    def describe(self) -> str:
        where = self.layer or "pixels"
        return f"{self.unit.describe()} - {self.weight:g}*distance({where})"

    def main(self) -> obj.Objective:
        return self.unit

    def _cost(self, d: torch.Tensor) -> torch.Tensor:
        return self.weight * self.scale.to(d.device) * d

    def _pixels(self, x01: torch.Tensor) -> torch.Tensor:
        t = _resized(self.target, x01)
        return self._cost((x01 - t).pow(2).flatten(1).mean(1) / PIXEL_SCALE)

    def __call__(self, acts: obj.Activations) -> torch.Tensor:
        v = self.unit(acts)
        if self.layer is None:
            return v
        a = acts[self.layer].float()
        t = _resized(self.target, a)
        d = (a - t).pow(2).flatten(1).mean(1) / t.pow(2).mean().clamp_min(1e-12)
        return v - self._cost(d)

    def subset(self, start: int, stop: int) -> obj.Objective:
        return Accentuation(self.unit.subset(start, stop), self.target, self.weight,
                            self.scale[start:stop], self.layer)  # fmt: skip


class MatchActivations(obj.Objective):
    """Per image: ``dot(a, t) / |t|^2 * cos(a, t)^power`` over the whole activation tensor."""

    def __init__(self, layer: str, target: torch.Tensor, power: float) -> None:
        self.layer, self.target, self.power = layer, target.detach().float(), float(power)
        self.layers = (layer,)

    def describe(self) -> str:
        return f"dot×cos^{self.power:g}({self.layer}, the image's activations)"

    def __call__(self, acts: obj.Activations) -> torch.Tensor:
        a = acts[self.layer].float()
        t = _resized(self.target, a).expand_as(a)
        af, tf = a.flatten(1), t.flatten(1)
        dot = (af * tf).sum(1) / tf.pow(2).sum(1).clamp_min(1e-12)
        if self.power == 0:
            return dot
        cos = F.cosine_similarity(af, tf, dim=1, eps=1e-8).clamp_min(1e-6)
        return dot * cos.pow(self.power)

    def subset(self, start: int, stop: int) -> obj.Objective:
        return self


def cosine(a: torch.Tensor, t: torch.Tensor) -> float:
    """Cosine similarity of two activation tensors (flattened): how an inversion is judged."""
    return float(F.cosine_similarity(a.flatten()[None].double(), t.flatten()[None].double())[0])


__all__ = ["PIXEL_SCALE", "Accentuation", "MatchActivations", "cosine"]
