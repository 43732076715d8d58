"""The article's figures as settings: the regularization spectrum row and the steepest-descent
metrics (torch-free, so the app can list them before anything renders).

The spectrum row renders one unit once per *variant*: a bare baseline (pixels, no colour
decorrelation, no transforms, no penalties; "Unregularized") plus one regularizer or
parameterization at a time, in the article's order from weak to strong: frequency penalization,
transformation robustness, preconditioning, MACO, a learned prior.  Everything else (steps,
canvas, learning rate, seed, device) comes from the job's settings, so the row answers "what does
each regularizer do to *this* unit of *my* model at *my* budget".  Where the user has set a
strength (``tv``, ``blur_every``...), the row uses it; otherwise the variant's default below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim.settings import RenderSettings, TransformSettings

#: What every variant starts from: nothing but the objective (the article's "Unregularized").
BARE: dict[str, Any] = {
    "param": "pixel",
    "decorrelate": False,
    "transforms": None,
    "tv": 0.0,
    "l1": 0.0,
    "l2": 0.0,
    "blur_every": 0,
    "bilateral_every": 0,
    "grad_blur": 0.0,
    "lap_levels": 0,
    "octaves": 1,
    "optimizer": "adam",
    "shared": [],
}


@dataclass(frozen=True)
class Variant:
    """One tile of a figure: its key, caption, family, the paper it stands for, its changes."""

    key: str
    caption: str
    family: str
    reference: str
    changes: tuple[tuple[str, Any], ...]
    explain: str = ""


def _v(key: str, caption: str, family: str, ref: str, explain: str, **changes: Any) -> Variant:
    return Variant(key, caption, family, ref, tuple(changes.items()), explain)


SPECTRUM: tuple[Variant, ...] = (
    _v("none", "Unregularized", "unregularized", "Erhan et al. 2009",
       "Pixels only: high-frequency noise the network responds to (adversarial patterns)."),
    _v("tv", "Total variation", "frequency penalization", "Mahendran & Vedaldi 2015",
       "Penalizes differences between neighbouring pixels.", tv=10.0),
    _v("l1", "L1 toward grey", "penalty", "sparsity about grey",
       "Penalizes pixels away from grey (not a frequency penalty: a contrast one).", l1=5.0),
    _v("blur", "Blur every 4 steps", "frequency penalization", "Nguyen et al. 2015",
       "Blurs the image every few steps, damping high frequencies.", blur_every=4),
    _v("bilateral", "Bilateral filter", "frequency penalization", "Tyka 2016",
       "Edge-preserving smoothing every few steps: noise goes, edges stay.", bilateral_every=4),
    _v("grad_blur", "Gradient blur", "frequency penalization", "Øygard 2015",
       "Blurs the gradient instead of the image.", grad_blur=1.0),
    _v("laplacian", "Laplacian pyramid", "frequency penalization", "Mordvintsev 2016",
       "Gives every octave of the gradient the same strength.", lap_levels=4),
    _v("transforms", "Transformation robustness", "transformation robustness", "the article",
       "Random jitter, scale and rotation every step.", transforms="default"),
    _v("octaves", "Multi-scale octaves", "transformation robustness", "Mordvintsev 2015",
       "Optimizes at growing sizes, coarse structure first.", octaves=3, transforms="default"),
    _v("decorrelated", "Decorrelated Fourier", "preconditioning", "Olah et al. 2017",
       "Optimizes a whitened Fourier spectrum with decorrelated colours.",
       param="fourier", decorrelate=True),
    _v("article", "Decorrelated + transforms", "preconditioning", "Olah et al. 2017",
       "The article's recipe: preconditioning and transformation robustness.",
       param="fourier", decorrelate=True, transforms="default"),
    _v("maco", "MACO", "parameterization", "Fel et al. 2023",
       "Only the Fourier phase is optimized; the magnitude is a natural-image spectrum.",
       param="maco", decorrelate=True, transforms="default"),
    _v("prior", "Learned prior", "learned prior", "Nguyen et al. 2016",
       "A generator's latent is optimized: only images the generator can draw.",
       param="prior", transforms="default"),
)  # fmt: skip

#: The steepest-descent view: the same step under three metrics (article, "Preconditioning").
STEEPEST: tuple[Variant, ...] = (
    _v("l2", "L2 (pixels)", "steepest descent", "the article",
       "The plain gradient: steepest under the Euclidean metric on pixels.",
       optimizer="l2"),
    _v("linf", "L∞ (sign)", "steepest descent", "the article",
       "The sign of the gradient: steepest under the max metric; more high frequencies.",
       optimizer="linf"),
    _v("fourier", "Decorrelated Fourier", "steepest descent", "the article",
       "The gradient in the whitened Fourier space: fewer high frequencies.",
       param="fourier", decorrelate=True, optimizer="l2"),
)  # fmt: skip

VARIANTS: dict[str, Variant] = {v.key: v for v in SPECTRUM + STEEPEST}


def spectrum_keys(settings: RenderSettings) -> tuple[str, ...]:
    """The default row: every spectrum variant, the learned prior only when one is set."""
    return tuple(v.key for v in SPECTRUM if v.key != "prior" or settings.prior)


def variant(key: str) -> Variant:
    try:
        return VARIANTS[key]
    except KeyError:
        raise ConfigError(
            f"Unknown figure variant {key!r}; known: {', '.join(VARIANTS)}."
        ) from None


def variant_settings(base: RenderSettings, key: str) -> RenderSettings:
    """``base`` (the job's settings) turned into the settings of variant ``key``.

    A regularizer the user has already set in ``base`` keeps the user's strength; the rest of
    ``BARE`` switches everything else off.
    """
    v = variant(key)
    changes = dict(BARE)
    for name, value in v.changes:
        if name == "transforms":
            value = base.transforms or TransformSettings()
        elif (
            name in ("tv", "l1", "grad_blur")
            and getattr(base, name) > 0
            or name in ("blur_every", "bilateral_every", "lap_levels")
            and getattr(base, name)
        ):
            value = getattr(base, name)
        elif name == "octaves" and base.octaves > 1:
            value = base.octaves
        changes[name] = value
    out = replace(base, **changes)
    out.validate()
    return out


__all__ = [
    "BARE",
    "SPECTRUM",
    "STEEPEST",
    "VARIANTS",
    "Variant",
    "spectrum_keys",
    "variant",
    "variant_settings",
]
