"""A learned prior: images are what a generator makes of a latent, and the latent is optimized.

Nguyen et al. (2016) parameterize the image by a GAN generator's latent code; the optimizer can
then only reach images the generator can draw, which is the strongest regularizer of the
article's spectrum ("the most photorealistic visualizations, but it may be unclear what came
from the model being visualized and what came from the prior").  ``PriorParam`` stands where an
``ImageParam`` does, so objectives, transforms, diversity, batches and galleries are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fvdesk.core.errors import RenderError
from fvdesk.core.model.generator import Generator
from fvdesk.core.optim.param import images_uint8


class PriorParam(nn.Module):
    """``forward()`` -> NCHW in [0, 1]: ``generator(latent)`` mapped from ``value_range``."""

    kind = "prior"

    def __init__(
        self,
        generator: Generator,
        batch: int,
        *,
        channels: int = 3,
        seeds: Sequence[int] | None = None,
        sd: float = 1.0,
        value_range: tuple[float, float] = (-1.0, 1.0),
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.generator = generator.to(device)
        self.batch, self.channels = batch, channels
        self.height, self.width = generator.height, generator.width
        self.seeds = list(seeds) if seeds is not None else list(range(batch))
        self.lo, self.hi = float(value_range[0]), float(value_range[1])
        self.separate = nn.Parameter(self._draw(self.seeds, sd).to(device))
        self.shared = nn.ParameterList()

    def _draw(self, seeds: Sequence[int], sd: float) -> torch.Tensor:
        out = []
        for s in seeds:
            g = torch.Generator().manual_seed(int(s) & 0xFFFF_FFFF_FFFF_FFFF)
            out.append(torch.randn(self.generator.latent_shape, generator=g) * sd)
        return torch.stack(out)

    @torch.no_grad()
    def reinit_(self, indices: Sequence[int], sd: float, salt: int = 1) -> None:
        idx = list(indices)
        if idx:
            fresh = self._draw([self.seeds[i] ^ (salt * 0x9E3779B1) for i in idx], max(sd, 1.0))
            self.separate[idx] = fresh.to(self.separate.device)

    def forward(self) -> torch.Tensor:
        x = self.generator.image(self.separate).float()
        x = ((x - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
        if x.shape[1] != self.channels:  # a grey generator for a colour model, or the reverse
            x = x.mean(1, keepdim=True) if self.channels == 1 else x.expand(-1, 3, -1, -1)
        return x

    def blur_(self, sigma: float) -> None:
        raise RenderError("A learned prior has no pixels to blur; its latent is optimized.")

    def set_image_(self, x01: torch.Tensor) -> None:
        raise RenderError("A learned prior cannot be set to an image; its latent is optimized.")

    @torch.no_grad()
    def to_uint8(self) -> np.ndarray:
        return images_uint8(self.forward())
