"""Steepest descent under different metrics: the article's "Preconditioning and parameterization".

"You can think of it as doing steepest descent to optimize the same objective, but in another
parameterization of the space or under a different notion of distance."  The steepest step of
length ``lr`` is ``lr * g / |g|_2`` under the L2 metric and ``lr * sign(g)`` under L-infinity;
in the decorrelated Fourier parameterization the L2 step in *its* coordinates is a differently
shaped step in pixels (``P P^T g`` for the linear map ``P`` from coefficients to pixels), with far
less high-frequency energy.

``SteepestAscent`` is the update rule for ``RenderSettings.optimizer`` ``"l2"``/``"linf"`` (Adam,
the default, is what renders normally use).  ``step_image`` computes the first step from a start
image for the steepest-descent view, which shows the three steps side by side.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from fvdesk.core.optim.parameterizations import make_param
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.core.optim.transforms import RobustnessTransform


class SteepestAscent(torch.optim.Optimizer):
    """Normalized steepest descent on the loss: per image (the first axis of ``separate``) an L2
    step ``lr * g / rms(g)`` or an L-infinity step ``lr * sign(g)``; both move every coordinate by
    ``lr`` on average, so one learning rate compares them fairly."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, metric: str = "l2") -> None:
        if metric not in ("l2", "linf"):
            raise ValueError(f"unknown metric {metric!r}")
        super().__init__(params, {"lr": lr, "metric": metric})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]  # no closure: step() takes none
        for group in self.param_groups:
            lr, metric = group["lr"], group["metric"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if metric == "linf":
                    p.add_(torch.sign(g), alpha=-lr)
                    continue
                rows = g.reshape(g.shape[0], -1) if g.dim() > 1 else g.reshape(1, -1)
                rms = rows.pow(2).mean(1).sqrt().clamp_min(1e-20)
                p.sub_((rows / rms[:, None]).view_as(g) * lr)


def make_optimizer(settings: RenderSettings, params: Iterable[torch.Tensor], device: torch.device) -> torch.optim.Optimizer:  # fmt: skip
    """The update rule ``settings.optimizer`` names (fused Adam where torch has it)."""
    if settings.optimizer == "adam":
        fused = device.type in ("cpu", "cuda")  # one kernel per Adam step where torch has it
        return torch.optim.Adam(params, lr=settings.lr, fused=fused)
    return SteepestAscent(params, settings.lr, settings.optimizer)


def step_image(delta: torch.Tensor) -> np.ndarray:
    """A step (NCHW, any sign) as uint8 NHWC images: grey is no change, each image scaled to its
    own largest change so their shapes compare (their sizes differ by orders of magnitude)."""
    peak = delta.detach().abs().flatten(1).amax(1).clamp_min(1e-20).view(-1, 1, 1, 1)
    x = (0.5 + 0.5 * delta.detach() / peak).clamp(0, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return (x * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def rms(x: torch.Tensor) -> float:
    return math.sqrt(float(x.detach().double().pow(2).mean()))


def first_step(
    model: Any,
    objective: Any,
    settings: RenderSettings,
    x0: torch.Tensor,
    device: torch.device,
    pre: Any = None,
) -> tuple[torch.Tensor, float]:
    """One update from the start images ``x0`` (NCHW in [0, 1]) under ``settings``'
    parameterization and update rule, without transforms: the change of the image it makes, and
    the first-order gain of the objective per unit RMS change (``g . dx / rms(dx)``)."""
    b, _, h, w = x0.shape
    p = make_param(settings, b, h, w, channels=model.input.channels, seeds=[0] * b, device=device)
    p.set_image_(x0)
    opt = make_optimizer(settings, p.parameters(), device)
    ext = model.extractor(list(objective.layers))
    out = (int(model.input.height), int(model.input.width)) if model.input.fixed_size else None
    fit = RobustnessTransform(
        None, (h, w), out=out, fit=settings.fit, multiple=model.input.size_multiple
    )
    x = p()
    x.retain_grad()
    values = objective(ext(model.prepare_input(fit.fit_only(x), pre)))
    opt.zero_grad(set_to_none=True)
    (-values.sum()).backward()
    g = x.grad.detach()
    opt.step()
    with torch.no_grad():
        delta = p() - x.detach()
    gain = float((g * delta).sum().neg()) / max(rms(delta), 1e-20)
    return delta, gain
