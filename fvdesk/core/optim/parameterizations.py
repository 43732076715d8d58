"""The one place a render's image parameterization is built from its settings.

``fourier``/``pixel``: ``param.ImageParam``; ``maco``: ``maco.MacoParam`` (phase only, a fixed
natural-image magnitude); ``prior``: ``prior.PriorParam`` (a generator's latent).  All four give
NCHW images in [0, 1] from ``forward()`` and share the renderer's interface (``separate``,
``reinit_``, ``blur_``, ``set_image_``, ``to_uint8``, ``height``/``width``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from fvdesk.core.errors import ConfigError
from fvdesk.core.model.generator import generator_for
from fvdesk.core.optim.maco import MacoParam, spectrum_for
from fvdesk.core.optim.param import ImageParam
from fvdesk.core.optim.prior import PriorParam
from fvdesk.core.optim.settings import RenderSettings

Param = ImageParam | PriorParam


def make_param(
    settings: RenderSettings,
    batch: int,
    height: int,
    width: int,
    *,
    channels: int,
    seeds: Sequence[int],
    device: torch.device,
) -> Param:
    """The parameterization ``settings.param`` names, for ``batch`` images of ``height x width``
    (a learned prior has the generator's own size)."""
    if settings.param == "prior":
        return PriorParam(
            generator_for(str(settings.prior)),
            batch,
            channels=channels,
            seeds=seeds,
            sd=max(settings.init_sd, 1.0),
            value_range=(float(settings.prior_range[0]), float(settings.prior_range[1])),
            device=device,
        )
    common: dict[str, Any] = dict(
        channels=channels,
        decorrelate=settings.decorrelate,
        decay=settings.decay,
        chroma=settings.chroma,
        color_matrix=settings.color_matrix,
        sd=settings.init_sd,
        seeds=seeds,
        shared=settings.shared,
        device=device,
    )
    if settings.param == "maco":
        return MacoParam(batch, height, width, spectrum=spectrum_for(settings.maco_spectrum),
                         **common)  # fmt: skip
    return ImageParam(batch, height, width, kind=settings.param, period=settings.spectrum_period,
                      **common)  # fmt: skip


def pin_settings(settings: RenderSettings, *, maco: bool = False) -> RenderSettings:
    """``settings`` with the content hashes of the files it renders from (the generator, the
    MACO spectrum; ``maco`` forces the spectrum's), so provenance can tell when they change.

    A hash recorded earlier (a provenance record being reproduced) must still match:
    otherwise a ``ConfigError`` names the file, since the same pixels cannot come back.
    """
    changes: dict[str, Any] = {}
    if settings.prior:
        sha = generator_for(settings.prior).sha256
        _same(settings.prior_sha256, sha, settings.prior)
        changes["prior_sha256"] = sha
    if maco or settings.param == "maco" or settings.maco_spectrum:
        sha = spectrum_for(settings.maco_spectrum).sha256()
        _same(settings.maco_sha256, sha, settings.maco_spectrum or "fvdesk's default spectrum")
        changes["maco_sha256"] = sha
    return replace(settings, **changes) if changes else settings


def _same(recorded: str | None, now: str, what: str) -> None:
    if recorded and recorded != now:
        raise ConfigError(
            f"{what} has changed since this was rendered (sha256 {recorded[:12]}…, now "
            f"{now[:12]}…), so the same images cannot be rendered again."
        )
