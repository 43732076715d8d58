"""The user-facing render settings, described once for every front end (CLI flags, the app's dock).

Each ``Option`` names a field of ``RenderSettings`` (or of its ``TransformSettings``), says what it
is for, its type and its group.  The CLI builds its flags from this table and the app its
controls, so a setting added to the engine reaches both by adding one row; a test fails when a
``RenderSettings`` field is neither described here nor listed in ``INTERNAL``.  Validation stays in
``RenderSettings.validate`` (one sentence naming the setting).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim.settings import (
    OPTIMIZERS,
    PARAM_KINDS,
    RenderSettings,
    TransformSettings,
)

#: ``RenderSettings`` fields with no option of their own, and why.
INTERNAL: dict[str, str] = {
    "transforms": "its elements are options; --no-transforms removes the chain",
    "color_matrix": "set by --color-from DIR (estimated from the images) or left to ImageNet's",
    "shared": "set by interpolation jobs",
    "device": "chosen with --device",
    "preview_every": "how often the app refreshes live previews",
    "maco_sha256": "pinned by the run from --maco-spectrum (provenance checks the file)",
    "prior_sha256": "pinned by the run from --prior (provenance checks the file)",
}


@dataclass(frozen=True)
class Option:
    name: str
    help: str
    group: str
    kind: type  # int, float, bool, str, or tuple (a comma list of floats)
    choices: tuple[str, ...] | None = None
    optional: bool = False  # "none"/"native" allowed (None)
    transform: bool = False  # a TransformSettings field
    low: float | None = 0  # smallest value allowed (numbers)
    above: bool = False  # the value must be above ``low``, not equal to it

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default(self) -> Any:
        src = TransformSettings() if self.transform else RenderSettings()
        return getattr(src, self.name)

    def parse(self, text: str) -> Any:
        """A command-line string as this option's value (``ConfigError`` naming the flag)."""
        t = text.strip()
        if self.optional and t.lower() in ("none", "native", ""):
            return None
        try:
            if self.kind is tuple:
                return tuple(float(v) for v in t.split(",") if v.strip())
            if self.kind is bool:
                if t.lower() in ("1", "true", "yes", "on"):
                    return True
                if t.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(t)
            value = self.kind(t)
        except ValueError:
            noun = {int: "a whole number", float: "a number", tuple: "a comma list of numbers"}
            raise ConfigError(
                f"{self.flag} takes {noun.get(self.kind, 'a value')}, got {text!r}."
            ) from None
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.flag} takes one of {', '.join(self.choices)}, got {text!r}.")
        if self.kind in (int, float) and self.low is not None:
            if self.above and not value > self.low:
                rule = "must be positive" if self.low == 0 else f"must be above {self.low:g}"
                raise ConfigError(f"{self.flag} {text!r} {rule}.")
            if not value >= self.low:
                rule = "must not be negative" if self.low == 0 else f"must be at least {self.low:g}"
                raise ConfigError(f"{self.flag} {text!r} {rule}.")
        return value


OPTIONS: tuple[Option, ...] = (
    # optimization
    Option("steps", "optimization steps per image", "optimization", int, low=1),
    Option(
        "size",
        "canvas size in pixels (square); 'native' = the model's input size",
        "optimization",
        int,
        optional=True,
        low=8,
    ),
    Option("lr", "Adam learning rate", "optimization", float, above=True),
    Option(
        "batch",
        "images optimized together (speed only; out of memory halves it)",
        "optimization",
        int,
        low=1,
    ),
    Option("seed", "random seed: the same seed renders the same image", "optimization", int),
    Option("init_sd", "standard deviation of the random start", "optimization", float),
    Option(
        "lr_anneal",
        "share of the steps, at the end, over which the learning rate falls (cosine; 0: constant)",
        "optimization",
        float,
    ),
    Option("lr_final", "the learning rate at the end, as a share of --lr", "optimization", float),
    Option(
        "average",
        "share of the steps, at the end, whose images are averaged into the saved one "
        "(0: the last image)",
        "optimization",
        float,
    ),
    Option(
        "early_stop",
        "stop once no image's objective gains more than this share per window (0: never)",
        "optimization",
        float,
    ),
    Option(
        "early_stop_window",
        "steps per window of that early-stop comparison",
        "optimization",
        int,
        low=1,
    ),
    Option(
        "relu_override_steps",
        "steps of redirected ReLU gradients for units dead on the start image (0: off)",
        "optimization",
        int,
    ),
    # parameterization
    Option(
        "param",
        "image parameterization: decorrelated Fourier spectrum, raw pixels, MACO (Fourier phase "
        "only, magnitude fixed to a natural-image spectrum) or a learned prior (--prior)",
        "parameterization",
        str,
        choices=PARAM_KINDS,
    ),
    Option(
        "maco_spectrum",
        "--param maco: the magnitude spectrum, a saved spectrum (.npz) or a folder of images "
        "(default: fvdesk's natural-image spectrum)",
        "parameterization",
        str,
        optional=True,
    ),
    Option(
        "prior",
        "--param prior: a generator ONNX file (latent -> image) whose latent is optimized "
        "instead of pixels (Nguyen et al. 2016)",
        "parameterization",
        str,
        optional=True,
    ),
    Option(
        "prior_range",
        "the generator's output range LOW,HIGH, mapped to [0, 1] (write --prior-range=-1,1)",
        "parameterization",
        tuple,
    ),
    Option(
        "decorrelate",
        "decorrelate colours (ImageNet's colour covariance, or --color-from)",
        "parameterization",
        bool,
    ),
    Option(
        "chroma",
        "gain of the decorrelated colour axes against luminance (1: the colour matrix as "
        "measured); below 1 keeps renders' colours within photographs' range",
        "parameterization",
        float,
        above=True,
    ),
    Option(
        "decay",
        "Fourier spectrum decay: frequencies scaled by 1/f^decay",
        "parameterization",
        float,
    ),
    Option(
        "spectrum_period",
        "Fourier: structures larger than this many pixels get no larger steps than it (0: the "
        "canvas, as Lucid); keeps large flat patches from running out of range",
        "parameterization",
        float,
    ),
    Option(
        "fit",
        "fixed-size models: resize the canvas to the model's size, or centre-crop it",
        "parameterization",
        str,
        choices=("resize", "crop"),
    ),
    # transformation robustness
    Option(
        "pad",
        "pixels of padding around the canvas before the random transforms",
        "transformation robustness",
        int,
        transform=True,
    ),
    Option(
        "jitter",
        "first random shift, total pixels",
        "transformation robustness",
        int,
        transform=True,
    ),
    Option(
        "scales",
        "random scales to draw from (comma list; empty: none)",
        "transformation robustness",
        tuple,
        optional=True,
        transform=True,
    ),
    Option(
        "angles",
        "random rotations in degrees to draw from (comma list; empty: none)",
        "transformation robustness",
        tuple,
        optional=True,
        transform=True,
    ),
    Option(
        "jitter2",
        "second random shift, total pixels",
        "transformation robustness",
        int,
        transform=True,
    ),
    Option(
        "subpixel",
        "real-valued (not whole-pixel) random shifts",
        "transformation robustness",
        bool,
        transform=True,
    ),
    Option(
        "pad_mode",
        "what the padding shows: constant grey or a reflection",
        "transformation robustness",
        str,
        choices=("constant", "reflect"),
        transform=True,
    ),
    # frequency penalties
    Option("tv", "total-variation penalty weight", "frequency penalization", float),
    Option("l1", "L1 penalty weight (pixels away from grey)", "frequency penalization", float),
    Option("l2", "L2 penalty weight (pixels away from grey)", "frequency penalization", float),
    Option("blur_every", "blur the image every N steps (0: never)", "frequency penalization", int),
    Option(
        "blur_sigma", "sigma in pixels of that blur", "frequency penalization", float, above=True
    ),
    Option(
        "bilateral_every",
        "edge-preserving bilateral filter of the image every N steps (0: never; Tyka 2016)",
        "frequency penalization",
        int,
    ),
    Option(
        "bilateral_sigma",
        "spatial sigma in pixels of that filter",
        "frequency penalization",
        float,
        above=True,
    ),
    Option(
        "bilateral_range",
        "colour sigma of that filter (on the 0-1 scale): edges above it are kept",
        "frequency penalization",
        float,
        above=True,
    ),
    # preconditioning
    Option(
        "grad_blur",
        "blur the image gradient with this sigma in pixels every step (0: off; Øygard 2015)",
        "preconditioning",
        float,
    ),
    Option(
        "lap_levels",
        "normalize the image gradient per Laplacian-pyramid level, this many levels "
        "(0: off; Mordvintsev 2016)",
        "preconditioning",
        int,
    ),
    Option(
        "optimizer",
        "update rule: Adam, or normalized steepest ascent under the L2 or L-infinity metric "
        "(the article's steepest-descent comparison)",
        "preconditioning",
        str,
        choices=OPTIMIZERS,
    ),
    Option(
        "octaves",
        "multi-scale: optimize at this many increasing sizes, upsampling between "
        "(1: off; Mordvintsev 2015)",
        "multi-scale",
        int,
        low=1,
    ),
    Option("octave_scale", "size ratio between octaves", "multi-scale", float, low=1, above=True),
    # speed
    Option(
        "channels_last", "CUDA: channels-last memory layout (same numbers, faster)", "speed", bool
    ),
    Option("amp", "CUDA: bfloat16 autocast of the model's forward pass", "speed", bool),
)


def option(name: str) -> Option:
    for o in OPTIONS:
        if o.name == name:
            return o
    raise KeyError(name)


def undocumented() -> list[str]:
    """``RenderSettings`` fields that no option describes and ``INTERNAL`` does not explain."""
    known = {o.name for o in OPTIONS if not o.transform} | set(INTERNAL)
    return [f.name for f in fields(RenderSettings) if f.name not in known]


def apply(settings: RenderSettings, values: Mapping[str, Any]) -> RenderSettings:
    """``settings`` with the given option values (by option name) replaced, validated."""
    top = {k: v for k, v in values.items() if not option(k).transform}
    tf = {k: v for k, v in values.items() if option(k).transform}
    out = replace(settings, **top)
    if tf and out.transforms is not None:
        out = replace(out, transforms=replace(out.transforms, **tf))
    out.validate()
    return out
