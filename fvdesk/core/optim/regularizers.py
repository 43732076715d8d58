"""Regularizers: the article's "spectrum of regularization", applied inside the render loop.

Three places in a step can hold a regularizer, and the article's families map onto them:

* **penalties** added to the loss (frequency penalization): total variation (Mahendran & Vedaldi
  2015), L1 and L2 about grey;
* **filters of the image** every N steps (frequency penalization): Gaussian blur (Nguyen et al.
  2015; ``ImageParam.blur_``) and the edge-preserving bilateral filter (Tyka 2016), which
  smooths noise but keeps edges whose colour step is above its range sigma;
* **transforms of the image gradient** before it reaches the parameters (preconditioning; the
  article: "it's not clear this is really a regularizer"): Gaussian blur of the gradient
  (Øygard 2015) and Laplacian-pyramid normalization (Mordvintsev 2016), which rescales every
  octave of the gradient to unit RMS so fine and coarse structure move at the same rate;
* **multi-scale octaves** (Mordvintsev 2015): the image is optimized at increasing sizes and
  upsampled between them (``octave_plan``), so coarse structure forms before fine detail can.

Gradient transforms act on the gradient of the objective with respect to the [0, 1] image only
(penalties keep their own gradients), whatever the parameterization behind the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from fvdesk.core.model.loaded import round_to_multiple
from fvdesk.core.optim.param import gaussian_blur
from fvdesk.core.optim.settings import RenderSettings

#: Burt & Adelson's 5-tap binomial kernel, the Laplacian pyramid's low-pass filter.
_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


# -- penalties ------------------------------------------------------------------------------------
def penalties(x: torch.Tensor, settings: RenderSettings) -> torch.Tensor | None:
    """Per-image frequency penalties on the [0, 1] image (total variation, L1, L2 about grey)."""
    total = None
    if settings.tv > 0:
        tv = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).mean(1)
        tv = tv + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).mean(1)
        total = settings.tv * tv
    if settings.l1 > 0:
        v = settings.l1 * (x - 0.5).abs().flatten(1).mean(1)
        total = v if total is None else total + v
    if settings.l2 > 0:
        v = settings.l2 * (x - 0.5).pow(2).flatten(1).mean(1)
        total = v if total is None else total + v
    return total


# -- filters of the image -------------------------------------------------------------------------
def bilateral_filter(x: torch.Tensor, sigma_space: float, sigma_range: float) -> torch.Tensor:
    """Edge-preserving smoothing of NCHW images in [0, 1] (Tomasi & Manduchi's bilateral filter).

    Each pixel becomes the average of its neighbours within ``2 * sigma_space`` pixels, weighted
    by spatial distance and by colour distance (Euclidean over channels, ``sigma_range`` on the
    0-1 scale): across an edge the colour weight vanishes, so edges stay sharp while noise of
    amplitude below ``sigma_range`` is averaged away.
    """
    b, c, h, w = x.shape
    r = max(1, math.ceil(2 * sigma_space))
    k = 2 * r + 1
    mode = "reflect" if r < min(h, w) else "replicate"
    patches = F.unfold(F.pad(x, (r, r, r, r), mode=mode), k).view(b, c, k * k, h * w)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    space = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma_space**2)).flatten()
    centre = x.reshape(b, c, 1, h * w)
    dist2 = (patches - centre).pow(2).sum(1, keepdim=True)  # (b, 1, k*k, h*w)
    weight = space.view(1, 1, -1, 1) * torch.exp(-dist2 / (2 * sigma_range**2))
    out = (patches * weight).sum(2) / weight.sum(2)
    return out.view(b, c, h, w)


@torch.no_grad()
def filter_image_(param: Any, step: int, settings: RenderSettings) -> None:
    """The every-N-steps image filters of ``settings`` that fall on ``step`` (after the update)."""
    if settings.blur_every and step % settings.blur_every == 0:
        param.blur_(settings.blur_sigma)
    if settings.bilateral_every and step % settings.bilateral_every == 0:
        x = param()
        param.set_image_(bilateral_filter(x, settings.bilateral_sigma, settings.bilateral_range))


# -- transforms of the image gradient -------------------------------------------------------------
def _binomial(x: torch.Tensor) -> torch.Tensor:
    k1 = torch.tensor(_BINOMIAL, dtype=x.dtype, device=x.device)
    k1 = k1 / k1.sum()
    c = x.shape[1]
    mode = "reflect" if min(x.shape[2:]) > 2 else "replicate"
    y = F.pad(x, (2, 2, 2, 2), mode=mode)
    y = F.conv2d(y, k1.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(y, k1.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def laplacian_bands(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """The Laplacian pyramid of NCHW ``x``, finest band first, the low-pass residual last.

    ``sum`` of the bands, each upsampled to the size of the one before (``merge_bands``), gives
    ``x`` back exactly: every band is defined as what the coarser level does not explain.
    """
    bands = []
    cur = x
    for _ in range(levels - 1):
        if min(cur.shape[2:]) < 4:
            break
        low = _binomial(cur)[:, :, ::2, ::2]
        bands.append(cur - F.interpolate(low, size=cur.shape[2:], mode="bilinear"))
        cur = low
    bands.append(cur)
    return bands


def merge_bands(bands: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of ``laplacian_bands``."""
    out = bands[-1]
    for band in reversed(bands[:-1]):
        out = band + F.interpolate(out, size=band.shape[2:], mode="bilinear")
    return out


def laplacian_normalize(g: torch.Tensor, levels: int) -> torch.Tensor:
    """``g`` with every Laplacian-pyramid band scaled to unit RMS per image (Mordvintsev 2016).

    The raw gradient of a CNN is dominated by its finest band (strided convolutions and pooling
    make checkerboards); after this, every octave of detail gets the same share of the step.
    """
    bands = laplacian_bands(g, levels)
    normed = [t / t.pow(2).flatten(1).mean(1).sqrt().clamp_min(1e-12).view(-1, 1, 1, 1)
              for t in bands]  # fmt: skip
    return merge_bands(normed)


class _GradientTransform(torch.autograd.Function):
    """Identity forward; ``fn(gradient)`` backward."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:  # fmt: skip
        ctx.fn = fn
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]  # autograd.Function's static signature
        return ctx.fn(g), None


def gradient_transform(settings: RenderSettings) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``image -> image`` whose backward pass blurs and/or pyramid-normalizes the gradient
    (``None`` when ``settings`` asks for neither)."""
    sigma, levels = float(settings.grad_blur), int(settings.lap_levels)
    if sigma <= 0 and levels < 2:
        return None

    def fn(g: torch.Tensor) -> torch.Tensor:
        if sigma > 0:
            g = gaussian_blur(g, sigma)
        if levels >= 2:
            g = laplacian_normalize(g, levels)
        return g

    return lambda x: _GradientTransform.apply(x, fn)


# -- octaves --------------------------------------------------------------------------------------
def octave_plan(
    steps: int, size: tuple[int, int], octaves: int, scale: float, *, multiple: int = 1
) -> list[tuple[int, tuple[int, int]]]:
    """``[(first step, (h, w)), ...]``: sizes growing by ``scale`` and ending at ``size``.

    Steps are split evenly (the last octave takes the remainder); octaves smaller than 8 px or
    left without steps are dropped, so the plan always ends at the requested size.  With
    ``multiple`` (a graph's ``size_multiple``) the smaller octaves are rounded to multiples of
    it (at least one multiple), so each is a size the graph runs at.
    """
    h, w = size
    n = max(1, min(octaves, steps)) if steps > 0 else 1
    plan: list[tuple[int, tuple[int, int]]] = []
    per = steps // n if steps > 0 else 0
    for i in range(n):
        f = scale ** (n - 1 - i)
        hw = (
            round_to_multiple(max(8, round(h / f)), multiple),
            round_to_multiple(max(8, round(w / f)), multiple),
        )
        first = 1 + i * per
        if plan and plan[-1][1] == hw:
            continue
        plan.append((first, hw))
    plan[-1] = (plan[-1][0], (h, w))
    return plan


__all__ = [
    "bilateral_filter",
    "filter_image_",
    "gradient_transform",
    "laplacian_bands",
    "laplacian_normalize",
    "merge_bands",
    "octave_plan",
    "penalties",
]
