"""Transformation robustness: the article's random pad/jitter/scale/rotate/jitter/crop each step.

An image that still excites the target after small random shifts, zooms and rotations cannot rely
on pixel-exact high-frequency patterns, so the optimizer is pushed away from them.

The article's chain, in order: pad 16 px; jitter up to 16 px; scale by one of
{1, 0.975, 1.025, 0.95, 1.05}; rotate by one of {-5..5} degrees; jitter up to 8 px; crop the
padding.  Every step of that chain is an affine map of pixel coordinates about the image centre,
so the whole chain is one ``affine_grid`` + ``grid_sample`` per batch (each image its own random
parameters), sampling from the padded canvas.  Fitting to a fixed-size model's native input
(resize or centre-crop) is folded into the same affine map, so it costs nothing extra.

Conventions (documented choices):

* Jitter ``d`` is Lucid's random crop of ``d`` pixels: an integer shift in ``[-d//2, d - d//2]`` on each
  axis, so "jitter 16" moves the image by up to 16 px in total (+-8) and the article's two
  jitters (+-8, +-4) stay inside its 16 px padding.
* Padding is ``constant`` 0.5 grey by default (what Lucid's and Lucent's standard transforms use);
  ``reflect`` (mirror about the border) is the alternative.  The padding is emulated by
  ``grid_sample``'s border handling instead of a padded copy, so it is unbounded: where a rotated
  corner reaches beyond ``pad`` pixels it still sees the padding (Lucid would show black there).
  With ``pad=0`` everything outside the canvas is black (0), as in an unpadded Lucid chain.
* ``crop=False`` keeps the padded size (the model then sees the border).
* Random draws come from one CPU ``torch.Generator`` per image, seeded per image: a seed
  reproduces the sequence exactly on any device, and an image's transforms do not depend on
  which other images share its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from fvdesk.core.errors import ConfigError
from fvdesk.core.model.loaded import round_to_multiple
from fvdesk.core.optim.settings import (
    FitMode,
    TransformSettings,
)


class RobustnessTransform:
    """Applies ``TransformSettings`` (or only the fit, when ``settings`` is ``None``) to a batch.

    ``canvas`` is the parameterized image size; ``out`` the size the model receives (the canvas,
    the padded canvas when ``crop=False``, or the model's fixed input size).  ``multiple``: a
    size-agnostic graph's ``size_multiple``; without a fixed ``out`` the view is resized to the
    nearest multiple (the padding of ``crop=False`` would otherwise make any size).
    """

    def __init__(
        self,
        settings: TransformSettings | None,
        canvas: tuple[int, int],
        *,
        out: tuple[int, int] | None = None,
        fit: FitMode = "resize",
        seeds: Sequence[int] = (0,),
        multiple: int = 1,
    ) -> None:
        if fit not in ("resize", "crop"):
            raise ConfigError(f"fit must be 'resize' or 'crop', got {fit!r}.")
        self.settings = settings
        self.canvas = (int(canvas[0]), int(canvas[1]))
        pad = settings.pad if settings is not None else 0
        keep_pad = settings is not None and not settings.crop
        self.view = (
            (self.canvas[0] + 2 * pad, self.canvas[1] + 2 * pad) if keep_pad else self.canvas
        )
        if out is None and multiple > 1:
            out = (
                round_to_multiple(self.view[0], multiple),
                round_to_multiple(self.view[1], multiple),
            )
        self.out = (int(out[0]), int(out[1])) if out is not None else self.view
        self.fit: FitMode = fit
        self.generators = [_generator(s) for s in seeds]
        self._base: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}

    @property
    def batch(self) -> int:
        return len(self.generators)

    @property
    def identity(self) -> bool:
        return (self.settings is None or self.settings.identity) and self.out == self.canvas

    def draw(self) -> torch.Tensor:
        """This step's random parameters, (B, 6): jitter x, y, scale, angle (deg), jitter2 x, y."""
        s = self.settings or TransformSettings(0, 0, None, None, 0, True)
        rows = []
        for g in self.generators:
            u = torch.rand(6, generator=g, dtype=torch.float64).tolist()
            j1x, j1y = _shift(u[0], s.jitter, s.subpixel), _shift(u[1], s.jitter, s.subpixel)
            sc = _pick(u[2], s.scales, 1.0)
            an = _pick(u[3], s.angles, 0.0)
            j2x, j2y = _shift(u[4], s.jitter2, s.subpixel), _shift(u[5], s.jitter2, s.subpixel)
            rows.append((j1x, j1y, sc, an, j2x, j2y))
        return torch.tensor(rows, dtype=torch.float64)

    def theta(self, params: torch.Tensor) -> torch.Tensor:
        """Affine matrices (B, 2, 3) mapping normalized output coordinates to the canvas.

        In centred pixel coordinates the chain is ``src = R(-a) (q + t2) / s + t1``: undo the
        second jitter, then the rotation and scale (both about the centre), then the first jitter.
        """
        sh, sw = self.canvas  # the source: padding is emulated by grid_sample's border handling
        vh, vw = self.view
        oh, ow = self.out
        # output pixel (normalized u) -> centred pixel q in the view
        if (oh, ow) == (vh, vw) or self.fit == "crop":
            qx, qy = ow / 2.0, oh / 2.0
        else:  # resize the whole view onto the output
            qx, qy = vw / 2.0, vh / 2.0
        # numpy: a handful of (B,)-sized operations, far cheaper than as many tiny torch ops
        t1x, t1y, s, a, t2x, t2y = params.numpy().astype(np.float64).T
        rad = np.radians(a)
        cos, sin = np.cos(rad) / s, np.sin(rad) / s
        # R(-a) / s = [[cos, sin], [-sin, cos]] / s
        th = np.empty((params.shape[0], 2, 3))
        th[:, 0, 0] = cos * qx * 2.0 / sw
        th[:, 0, 1] = sin * qy * 2.0 / sw
        th[:, 1, 0] = -sin * qx * 2.0 / sh
        th[:, 1, 1] = cos * qy * 2.0 / sh
        th[:, 0, 2] = (cos * t2x + sin * t2y + t1x) * 2.0 / sw
        th[:, 1, 2] = (-sin * t2x + cos * t2y + t1y) * 2.0 / sh
        return torch.from_numpy(th)

    def __call__(self, x: torch.Tensor, params: torch.Tensor | None = None) -> torch.Tensor:
        """Transform a batch (B, C, H, W) on its own device; draws new parameters unless given."""
        if x.shape[0] != self.batch:
            raise ValueError(f"transform built for batch {self.batch}, got {x.shape[0]}")
        if self.identity:
            return x
        if params is None:
            params = self.draw()
        return self.apply(x, params)

    def apply(self, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """One ``grid_sample`` from the canvas; outside it, the padding (no padded copy is made)."""
        c = self.outside_value()
        if c is None:
            return self.warp(x, params, reflect=True)
        if c == 0.0:
            return self.warp(x, params)
        return self.warp(x - c, params) + c

    def outside_value(self) -> float | None:
        """What the model sees outside the canvas: the padding constant, 0 without padding, or
        ``None`` for reflection.  The renderer folds it into the model's preprocessing."""
        s = self.settings
        if s is None or s.pad == 0:
            return 0.0
        return None if s.pad_mode == "reflect" else float(s.pad_value)

    def grid(self, params: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Sampling grid (B, H, W, 2), what ``affine_grid`` returns, as two broadcast sums.

        ``g = A u + B v + C`` per image over the output pixel centres (u, v): summing a row
        term and a column term is cheaper than ``affine_grid``'s rebuilt base grid and K=3 matmul.
        """
        key = (device, dtype)
        base = self._base.get(key)
        if base is None:
            oh, ow = self.out
            v = ((torch.arange(oh, dtype=torch.float64) * 2 + 1) / oh - 1).to(device, dtype)
            u = ((torch.arange(ow, dtype=torch.float64) * 2 + 1) / ow - 1).to(device, dtype)
            base = (u.view(1, 1, ow, 1), v.view(1, oh, 1, 1))
            self._base[key] = base
        u, v = base
        th = self.theta(params).to(device=device, dtype=dtype)  # (B, 2, 3)
        a = th[:, :, 0].view(-1, 1, 1, 2)
        b = th[:, :, 1].view(-1, 1, 1, 2)
        c = th[:, :, 2].view(-1, 1, 1, 2)
        return torch.addcmul(
            torch.addcmul(c, v, b), u, a
        )  # (B, 1, W, 2) + (B, H, 1, 2) -> (B, H, W, 2)

    def warp(self, x: torch.Tensor, params: torch.Tensor, *, reflect: bool = False) -> torch.Tensor:
        """The affine warp alone: zeros outside the canvas, or its mirror image."""
        grid = self.grid(params, x.device, x.dtype)
        mode = "reflection" if reflect else "zeros"
        return F.grid_sample(x, grid, mode="bilinear", padding_mode=mode, align_corners=False)

    def fit_only(self, x: torch.Tensor) -> torch.Tensor:
        """The deterministic part only (centre view, fitted to the output): for final values."""
        if self.out == self.canvas and self.view == self.canvas:
            return x
        params = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]] * x.shape[0], dtype=torch.float64)
        return self.apply(x, params)


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return g


def _shift(u: float, d: int, subpixel: bool = False) -> float:
    """Integer shift in [-(d//2), d - d//2] (Lucid's random crop of d pixels), from a uniform u;
    with ``subpixel``, any real shift in [-d/2, d/2].

    Integer shifts keep bilinear sampling exact (no blur) when there is no scale or rotation, so
    a pattern locked to the pixel grid survives them; real shifts resample the canvas between
    its pixels every step, which such a pattern does not survive.
    """
    if d <= 0:
        return 0.0
    if subpixel:
        return (u - 0.5) * d
    return float(min(int(u * (d + 1)), d) - d // 2)


def _pick(u: float, values: Sequence[float] | None, default: float) -> float:
    if not values:
        return default
    return float(values[min(int(u * len(values)), len(values) - 1)])
