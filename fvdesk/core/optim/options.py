"""The user-facing render settings, described once for every front end (CLI flags, the app's dock).

Each ``Option`` names a field of ``RenderSettings`` (or of its ``TransformSettings``), says what it
is for, its type and its group, and (``Look``) how the app's settings dock shows it: label, range,
tooltip and section.  The CLI builds its flags from this table and the dock its controls, so a
setting added to the engine reaches both by adding one row; a test fails when a
``RenderSettings`` field is neither described here nor listed in ``INTERNAL``.  The options that
are only for experts are the explicit list ``EXPERT``: the dock shows them in its collapsed
"Advanced" section, every other option in its own section.  ``SWITCHES`` are the internal fields
the dock shows with flags of their own on the command line (``--device``, ``--no-transforms``).
``settings_from`` turns option values into ``RenderSettings`` for both front ends.  Validation
stays in ``RenderSettings.validate`` (one sentence naming the setting).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from fvdesk.core.errors import ConfigError
from fvdesk.core.optim.settings import (
    MIN_SIZE,
    OPTIMIZERS,
    PARAM_KINDS,
    RenderSettings,
    TransformSettings,
    canvas_setting,
)

#: ``RenderSettings`` fields with no option of their own, and why.
INTERNAL: dict[str, str] = {
    "transforms": "its elements are options; --no-transforms removes the chain (a dock switch)",
    "color_matrix": "set by --color-from DIR (estimated from the images) or left to ImageNet's",
    "shared": "set by interpolation jobs",
    "device": "chosen with --device (a dock switch)",
    "preview_every": "how often the app refreshes live previews (a dock switch)",
    "maco_sha256": "pinned by the run from --maco-spectrum (provenance checks the file)",
    "prior_sha256": "pinned by the run from --prior (provenance checks the file)",
}

#: What a dock control shows when the dock's default is the engine's.
ENGINE_DEFAULT: Any = object()


@dataclass(frozen=True)
class Look:
    """How the app's settings dock shows an option (the CLI reads none of it)."""

    label: str
    section: str = ""  # the dock section of an option that is not in EXPERT
    tip: str = ""  # the tooltip, which says why (default: the option's help)
    hi: float = 0  # the largest value a number control offers
    step: float = 1
    decimals: int = 0
    suffix: str = ""
    special: str = ""  # shown at the minimum (e.g. "off"), or a file control's placeholder
    texts: tuple[str, ...] = ()  # how each of the option's choices reads
    default: Any = ENGINE_DEFAULT  # the dock's own default (it favours interactive speed)


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
    look: Look | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def label(self) -> str:
        return self.look.label if self.look else self.name.replace("_", " ").capitalize()

    @property
    def tip(self) -> str:
        tip = self.look.tip if self.look else ""
        return tip or self.help[:1].upper() + self.help[1:] + "."

    @property
    def widget(self) -> str:
        """The control that edits it: int, float, bool, choice, file (a path or none) or list
        (a comma list of numbers)."""
        if self.kind is bool:
            return "bool"
        if self.choices:
            return "choice"
        if self.kind is tuple:
            return "list"
        if self.kind is str:
            return "file"
        return "int" if self.kind is int else "float"

    @property
    def section(self) -> str:
        """Where the dock shows it: ``ADVANCED`` for the ``EXPERT`` options."""
        if self.name in EXPERT:
            return ADVANCED
        return self.look.section if self.look else ADVANCED

    def default(self) -> Any:
        src = TransformSettings() if self.transform else RenderSettings()
        return getattr(src, self.name)

    def dock_default(self) -> Any:
        """The value the dock starts from (and Restore Defaults puts back)."""
        if self.look is not None and self.look.default is not ENGINE_DEFAULT:
            return self.look.default
        value = self.default()
        return "" if value is None and self.widget == "file" else value

    def text_of(self, value: Any) -> str:
        """A value as a list control shows it (``parse`` reads it back)."""
        if value is None:
            return "none" if self.optional else ""
        if isinstance(value, tuple | list):
            return ",".join(f"{v:g}" for v in value)
        return str(value)

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


#: The dock's sections, in order; ``ADVANCED`` (collapsed) holds the ``EXPERT`` options.
ADVANCED = "Advanced"
SECTIONS = ("Optimization", "Image", "Regularizers", "Preconditioning", "Display", ADVANCED)
_OPT, _IMG, _REG, _PRE = SECTIONS[:4]

# fmt: off
OPTIONS: tuple[Option, ...] = (
    # optimization
    Option("steps", "optimization steps per image", "optimization", int, low=1,
           look=Look("Steps", _OPT, hi=20000, step=16,
                     tip="Optimization steps per image. The article uses 2560; 256-512 already "
                         "shows most features.")),
    Option("size", "canvas size in pixels (square); 'native' = the model's input size",
           "optimization", int, optional=True, low=MIN_SIZE,
           look=Look("Canvas size", _OPT, hi=1024, step=16, suffix=" px", special="model's size",
                     default=128,
                     tip="Side of the optimized image; at the minimum, the model's own input "
                         "size. Models with a fixed input size see the canvas resized; "
                         "size-agnostic graphs that take multiples of a size step by it.")),
    Option("lr", "Adam learning rate", "optimization", float, above=True,
           look=Look("Learning rate", _OPT, hi=2.0, step=0.01, decimals=4,
                     tip="Adam learning rate, annealed over the second half of the steps (the "
                         "engine's default; the article: 0.05, constant).")),
    Option("batch", "images optimized together (speed only; out of memory halves it)",
           "optimization", int, low=1,
           look=Look("Batch size", _OPT, hi=512,
                     tip="Images optimized together; many units of a layer render in batches of "
                         "this size.")),
    Option("seed", "random seed: the same seed renders the same image", "optimization", int,
           look=Look("Seed", _OPT, hi=2**31 - 1,
                     tip="Random seed of the initial image and the transformations: same seed, "
                         "same image.")),
    Option("init_sd", "standard deviation of the random start", "optimization", float,
           look=Look("Start noise", hi=1.0, step=0.005, decimals=4)),
    Option("lr_anneal", "share of the steps, at the end, over which the learning rate falls "
           "(cosine; 0: constant)", "optimization", float,
           look=Look("Anneal the last", hi=1.0, step=0.05, decimals=2, special="off")),
    Option("lr_final", "the learning rate at the end, as a share of --lr", "optimization", float,
           look=Look("Final learning rate", hi=1.0, step=0.01, decimals=3, suffix=" × lr")),
    Option("average", "share of the steps, at the end, whose images are averaged into the saved "
           "one (0: the last image)", "optimization", float,
           look=Look("Average the last", _OPT, hi=1.0, step=0.05, decimals=2, special="off",
                     tip="Share of the steps, at the end, whose images are averaged into the "
                         "saved one: smoother images (less fine texture) for a slightly lower "
                         "objective.")),
    Option("early_stop", "stop once no image's objective gains more than this share per window "
           "(0: never)", "optimization", float,
           look=Look("Stop early below", _OPT, hi=0.5, step=0.005, decimals=3, special="off",
                     tip="Stop once no image's objective gains more than this share over a "
                         "window of steps (then a short learning-rate anneal): the default "
                         "recipe passes Lucent's 512-step quality in a fraction of its steps "
                         "(benchmarks/README.md).")),
    Option("early_stop_window", "steps per window of that early-stop comparison",
           "optimization", int, low=1, look=Look("Early-stop window", hi=4096, suffix=" steps")),
    Option("relu_override_steps", "steps of redirected ReLU / Hardswish / gate gradients for "
           "units dead on the start image or mid-run (0: off)", "optimization", int,
           look=Look("ReLU override", hi=10000, suffix=" steps", special="off")),
    # parameterization
    Option("param", "image parameterization: decorrelated Fourier spectrum, raw pixels, MACO "
           "(Fourier phase only, magnitude fixed to a natural-image spectrum) or a learned prior "
           "(--prior)", "parameterization", str, choices=PARAM_KINDS,
           look=Look("Parameterization", _IMG,
                     texts=("Fourier", "Pixel", "MACO (phase only)", "Learned prior"),
                     tip="Fourier: optimize a spectrum scaled to equal energy per frequency "
                         "(less high-frequency noise). Pixel: optimize the pixels directly. "
                         "MACO: optimize only the Fourier phase; the magnitude stays a "
                         "natural-image spectrum. Learned prior: optimize a generator's latent "
                         "(choose it below).")),
    Option("maco_spectrum", "--param maco: the magnitude spectrum, a saved spectrum (.npz) or a "
           "folder of images (default: fvdesk's natural-image spectrum)", "parameterization",
           str, optional=True,
           look=Look("MACO spectrum", _IMG, special="fvdesk's natural-image spectrum",
                     tip="The magnitude spectrum MACO keeps: a saved spectrum (.npz) or a folder "
                         "of your images.")),
    Option("prior", "--param prior: a generator ONNX file (latent -> image) whose latent is "
           "optimized instead of pixels (Nguyen et al. 2016)", "parameterization", str,
           optional=True,
           look=Look("Generator", _IMG, special="none: open a generator ONNX",
                     tip="A generator ONNX (latent -> image) for the learned prior (Nguyen et "
                         "al. 2016).")),
    Option("prior_range", "the generator's output range LOW,HIGH, mapped to [0, 1] (write "
           "--prior-range=-1,1)", "parameterization", tuple,
           look=Look("Generator range")),
    Option("decorrelate", "decorrelate colours (ImageNet's colour covariance, or --color-from)",
           "parameterization", bool,
           look=Look("Decorrelate colours", _IMG,
                     tip="Optimize in a decorrelated colour space (square root of the ImageNet "
                         "colour covariance, or the dataset's).")),
    Option("chroma", "gain of the decorrelated colour axes against luminance (1: the colour "
           "matrix as measured); below 1 keeps renders' colours within photographs' range",
           "parameterization", float, above=True,
           look=Look("Colour gain", hi=2.0, step=0.05, decimals=2,
                     tip="How far colours may move against brightness; below 1 keeps renders "
                         "within the colour range of photographs.")),
    Option("decay", "Fourier spectrum decay: frequencies scaled by 1/f^decay", "parameterization",
           float, look=Look("Spectrum decay", hi=4.0, step=0.1, decimals=2)),
    Option("spectrum_period", "Fourier: structures larger than this many pixels get no larger "
           "steps than it (0: the canvas, as Lucid); keeps large flat patches from running out of "
           "range", "parameterization", float,
           look=Look("Spectrum period", hi=1024, step=1, suffix=" px", special="canvas",
                     tip="Structures larger than this get no larger steps, so big flat patches "
                         "do not saturate.")),
    Option("fit", "fixed-size models: resize the canvas to the model's size, or centre-crop it",
           "parameterization", str, choices=("resize", "crop"),
           look=Look("Fixed-size fit", texts=("Resize", "Centre-crop"))),
    # transformation robustness
    Option("pad", "pixels of padding around the canvas before the random transforms",
           "transformation robustness", int, transform=True,
           look=Look("Padding", hi=256, suffix=" px")),
    Option("jitter", "first random shift, total pixels", "transformation robustness", int,
           transform=True, look=Look("Jitter", hi=256, suffix=" px")),
    Option("scales", "random scales to draw from (comma list; empty: none)",
           "transformation robustness", tuple, optional=True, transform=True,
           look=Look("Scales")),
    Option("angles", "random rotations in degrees to draw from (comma list; empty: none)",
           "transformation robustness", tuple, optional=True, transform=True,
           look=Look("Angles (degrees)")),
    Option("jitter2", "second random shift, total pixels", "transformation robustness", int,
           transform=True, look=Look("Second jitter", hi=256, suffix=" px")),
    Option("subpixel", "real-valued (not whole-pixel) random shifts",
           "transformation robustness", bool, transform=True, look=Look("Subpixel shifts")),
    Option("pad_mode", "what the padding shows: constant grey or a reflection",
           "transformation robustness", str, choices=("constant", "reflect"), transform=True,
           look=Look("Padding shows", texts=("Grey", "A reflection"))),
    # frequency penalties
    Option("tv", "total-variation penalty weight", "frequency penalization", float,
           look=Look("Total variation", _REG, hi=100.0, step=0.0005, decimals=5, special="off",
                     tip="Penalty on neighbouring pixel differences (frequency penalization).")),
    Option("l1", "L1 penalty weight (pixels away from grey)", "frequency penalization", float,
           look=Look("L1", _REG, hi=100.0, step=0.0005, decimals=5, special="off",
                     tip="Penalty on |pixel - 0.5|: pulls the image towards grey.")),
    Option("l2", "L2 penalty weight (pixels away from grey)", "frequency penalization", float,
           look=Look("L2", _REG, hi=100.0, step=0.0005, decimals=5, special="off",
                     tip="Penalty on (pixel - 0.5)^2: pulls the image towards grey.")),
    Option("blur_every", "blur the image every N steps (0: never)", "frequency penalization", int,
           look=Look("Blur every", _REG, hi=1000, suffix=" steps", special="off",
                     tip="Blur the image every N steps (frequency penalization); off = never.")),
    Option("blur_sigma", "sigma in pixels of that blur", "frequency penalization", float,
           above=True, look=Look("Blur sigma", hi=16.0, step=0.25, decimals=2, suffix=" px")),
    Option("bilateral_every", "edge-preserving bilateral filter of the image every N steps (0: "
           "never; Tyka 2016)", "frequency penalization", int,
           look=Look("Bilateral every", _REG, hi=1000, suffix=" steps", special="off",
                     tip="Edge-preserving smoothing every N steps: noise goes, edges stay (Tyka "
                         "2016).")),
    Option("bilateral_sigma", "spatial sigma in pixels of that filter", "frequency penalization",
           float, above=True,
           look=Look("Bilateral sigma", hi=16.0, step=0.25, decimals=2, suffix=" px")),
    Option("bilateral_range", "colour sigma of that filter (on the 0-1 scale): edges above it "
           "are kept", "frequency penalization", float, above=True,
           look=Look("Bilateral colour sigma", hi=1.0, step=0.01, decimals=3)),
    # preconditioning
    Option("grad_blur", "blur the image gradient with this sigma in pixels every step (0: off; "
           "Øygard 2015)", "preconditioning", float,
           look=Look("Gradient blur", _PRE, hi=16.0, step=0.25, decimals=2, suffix=" px",
                     special="off",
                     tip="Blur the gradient, not the image, each step (Øygard 2015).")),
    Option("lap_levels", "normalize the image gradient per Laplacian-pyramid level, this many "
           "levels (0: off; Mordvintsev 2016)", "preconditioning", int,
           look=Look("Laplacian pyramid", _PRE, hi=8, suffix=" levels", special="off",
                     tip="Give every octave of the gradient the same strength (Mordvintsev "
                         "2016). 1 is not a pyramid.")),
    Option("optimizer", "update rule: Adam, or normalized steepest ascent under the L2 or "
           "L-infinity metric (the article's steepest-descent comparison)", "preconditioning",
           str, choices=OPTIMIZERS,
           look=Look("Update rule", _PRE, texts=("Adam", "Steepest, L2", "Steepest, L∞ (sign)"),
                     tip="Adam, or plain steepest ascent under the L2 or L∞ metric (the "
                         "article's comparison).")),
    Option("octaves", "multi-scale: optimize at this many increasing sizes, upsampling between "
           "(1: off; Mordvintsev 2015)", "multi-scale", int, low=1,
           look=Look("Octaves", _PRE, hi=8, special="off",
                     tip="Optimize at growing sizes, upsampling between: coarse structure first "
                         "(Mordvintsev 2015).")),
    Option("octave_scale", "size ratio between octaves", "multi-scale", float, low=1, above=True,
           look=Look("Octave scale", hi=4.0, step=0.1, decimals=2, suffix=" ×")),
    # speed
    Option("channels_last", "CUDA: channels-last memory layout (same numbers, faster)", "speed",
           bool, look=Look("Channels-last (CUDA)")),
    Option("amp", "CUDA: bfloat16 autocast of the model's forward pass", "speed", bool,
           look=Look("bfloat16 autocast (CUDA)")),
)

#: The options only experts need: the dock shows them in its collapsed "Advanced" section (the
#: article's recipe and fvdesk's defaults rarely need them changed; the CLI has them all).
EXPERT: tuple[str, ...] = (
    "init_sd", "lr_anneal", "lr_final", "early_stop_window", "relu_override_steps",
    "prior_range", "decay", "chroma", "spectrum_period", "fit",
    "pad", "jitter", "scales", "angles", "jitter2", "subpixel", "pad_mode",
    "blur_sigma", "bilateral_sigma", "bilateral_range", "octave_scale",
    "channels_last", "amp",
)

#: Internal fields the dock shows as controls of their own (the CLI has its own flags for them:
#: ``--device``, ``--no-transforms``); ``transforms`` switches the robustness chain on or off.
SWITCHES: tuple[Option, ...] = (
    Option("device", "where renders run", "optimization", str, choices=("auto", "cpu"),
           look=Look("Device", _OPT, texts=("auto (GPU if available)", "CPU"),
                     tip="Where renders run. 'auto' picks CUDA, then MPS, then the CPU.")),
    Option("transforms", "transformation robustness", "transformation robustness", bool,
           look=Look("Transformation robustness", _IMG, default=True,
                     tip="Pad, jitter, scale and rotate the image every step so features must "
                         "survive small transformations.")),
    Option("preview_every", "how often a running tile shows its current image", "display", int,
           low=1, look=Look("Preview every", "Display", hi=1000, suffix=" steps",
                            tip="How often a running tile shows its current image.")),
)
# fmt: on


def option(name: str) -> Option:
    for o in OPTIONS + SWITCHES:
        if o.name == name:
            return o
    raise KeyError(name)


def dock_options() -> tuple[Option, ...]:
    """Every control of the app's settings dock, section by section (``SECTIONS``; the
    ``EXPERT`` options under ``ADVANCED``), in the table's order within a section."""
    every = OPTIONS + SWITCHES
    return tuple(o for s in SECTIONS for o in every if o.section == s)


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


def settings_from(values: Mapping[str, Any], base: RenderSettings | None = None) -> RenderSettings:
    """``RenderSettings`` from option and switch values by name (the CLI's flags given, the
    dock's controls) over ``base`` (default: the engine's), validated.  An empty file is none, a
    size of 0 the model's own (``settings.canvas_setting``); ``transforms`` False removes the
    robustness chain, and its options with it.  Names this table does not know are ignored
    (settings saved by another version)."""
    out = base if base is not None else RenderSettings()
    given = dict(values)
    chain = given.pop("transforms", None)
    if chain is False:
        out = replace(out, transforms=None)
    elif chain and out.transforms is None:
        out = replace(out, transforms=TransformSettings())
    known = {o.name: o for o in OPTIONS + SWITCHES}
    clean: dict[str, Any] = {}
    for name, value in given.items():
        o = known.get(name)
        if o is None or (o.transform and out.transforms is None):
            continue
        if o.widget == "file" and not value:
            value = None
        elif name == "size":
            value = canvas_setting(value)
        clean[name] = value
    return apply(out, clean)
