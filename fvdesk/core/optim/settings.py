"""What a render is asked to do: ``RenderSettings`` and the robustness chain's ``TransformSettings``.

Plain data with validation (numpy only, no torch), so that the app, galleries and provenance
records can build, check and store settings without loading the engine.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np

from fvdesk.core.errors import ConfigError

PadMode = Literal["constant", "reflect"]
FitMode = Literal["resize", "crop"]

#: Image parameterizations: decorrelated Fourier, pixels, MACO (phase only), a learned prior.
PARAM_KINDS: tuple[str, ...] = ("fourier", "pixel", "maco", "prior")
#: Update rules: Adam, or normalized steepest ascent under the L2 or L-infinity metric.
OPTIMIZERS: tuple[str, ...] = ("adam", "l2", "linf")

#: The article's chain: scales and angles (degrees) drawn each step.
ARTICLE_SCALES: tuple[float, ...] = (1.0, 0.975, 1.025, 0.95, 1.05)
ARTICLE_ANGLES: tuple[float, ...] = tuple(float(a) for a in range(-5, 6))
#: The smallest canvas side (px) the engine optimizes.
MIN_SIZE = 8

#: fvdesk's default chain (chosen by ``benchmarks/bench_fidelity.py``): scales 0.80-1.04, so the
#: network sees the canvas a little zoomed out (0.92 on average) and fine detail gains it less;
#: rotations up to 10 degrees either way.
FVDESK_SCALES: tuple[float, ...] = tuple(round(0.8 + 0.02 * i, 2) for i in range(13))
FVDESK_ANGLES: tuple[float, ...] = tuple(float(a) for a in range(-10, 11, 2))


@dataclass
class TransformSettings:
    """The robustness chain; set an element to 0 / ``None`` / ``False`` to remove it.

    The defaults are fvdesk's chain: the article's padding and jitters, wider scales (zoomed
    out on average) and rotations, real-valued jitters and mirrored padding; ``article()`` is
    the article's chain exactly.
    """

    pad: int = 16
    jitter: int = 16
    scales: tuple[float, ...] | None = FVDESK_SCALES
    angles: tuple[float, ...] | None = FVDESK_ANGLES  # degrees
    jitter2: int = 8
    crop: bool = True
    pad_mode: PadMode = "reflect"
    pad_value: float = 0.5
    # jitters as any real shift, not whole pixels: the network never sees the canvas on its own
    # pixel grid, so pixel-exact patterns cannot pay off (see transforms.py)
    subpixel: bool = True

    @classmethod
    def article(cls) -> TransformSettings:
        """The article's chain: pad 16 (grey), jitter 16, scale, rotate +-5 deg, jitter 8, crop."""
        return cls(
            scales=ARTICLE_SCALES, angles=ARTICLE_ANGLES, pad_mode="constant", subpixel=False
        )

    def __post_init__(self) -> None:
        if self.scales is not None:
            self.scales = tuple(float(s) for s in self.scales) or None
        if self.angles is not None:
            self.angles = tuple(float(a) for a in self.angles) or None
        self.validate()

    def validate(self) -> None:
        """Raise a ``ConfigError`` naming the bad field."""
        for name in ("pad", "jitter", "jitter2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(
                    f"Transform setting {name!r} must be a whole number >= 0, got {v!r}."
                )
        if self.scales is not None and any(not (s > 0 and math.isfinite(s)) for s in self.scales):
            raise ConfigError(f"Transform scales must be positive numbers, got {self.scales!r}.")
        if self.angles is not None and any(not math.isfinite(a) for a in self.angles):
            raise ConfigError(f"Transform angles must be finite numbers, got {self.angles!r}.")
        if not isinstance(self.subpixel, bool):
            raise ConfigError(
                f"Transform setting 'subpixel' must be true or false, got {self.subpixel!r}."
            )
        if self.pad_mode not in ("constant", "reflect"):
            raise ConfigError(
                f"Transform pad_mode must be 'constant' or 'reflect', got {self.pad_mode!r}."
            )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scales"] = list(self.scales) if self.scales is not None else None
        d["angles"] = list(self.angles) if self.angles is not None else None
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformSettings:
        """Inverse of ``to_dict``; unknown keys are ignored (newer versions may add some)."""
        if not isinstance(data, dict):
            raise ConfigError(
                f"Transform settings must be a JSON object, got {type(data).__name__}."
            )
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for k in ("scales", "angles"):
            if kwargs.get(k) is not None:
                kwargs[k] = tuple(kwargs[k])
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"Invalid transform settings: {e}.") from None

    @property
    def identity(self) -> bool:
        """True when the chain leaves images unchanged (nothing random, no padding kept)."""
        return (
            self.jitter == 0
            and self.jitter2 == 0
            and not self.scales_random
            and not self.angles_random
            and (self.crop or self.pad == 0)
            and self._fixed_scale == 1.0
            and self._fixed_angle == 0.0
        )

    @property
    def scales_random(self) -> bool:
        return self.scales is not None and len(set(self.scales)) > 1

    @property
    def angles_random(self) -> bool:
        return self.angles is not None and len(set(self.angles)) > 1

    @property
    def _fixed_scale(self) -> float:
        return self.scales[0] if self.scales else 1.0

    @property
    def _fixed_angle(self) -> float:
        return self.angles[0] if self.angles else 0.0


# -- settings ---------------------------------------------------------------------------------------
#: Fields added after galleries were first recorded, with the value every render had before:
#: ``from_dict`` fills them in, so an old record reproduces the old image whatever the default.
BEFORE_FIELD: dict[str, Any] = {"spectrum_period": 0.0, "chroma": 1.0}


@dataclass
class RenderSettings:
    """Everything that determines a render; ``to_dict()`` is what galleries record."""

    steps: int = 256  # reaches Lucent's 512-step quality well before; see benchmarks/README.md
    size: int | None = None  # canvas px; None = the model's input size
    lr: float = 0.08
    batch: int = 8
    param: Literal["fourier", "pixel", "maco", "prior"] = "fourier"
    decorrelate: bool = True
    decay: float = 1.5  # spectrum 1/f**decay; the article's (Lucid's) is 1.0
    # structures larger than this many pixels gain no more than it (0: the canvas, Lucid's);
    # 16 keeps large patches from running out of the sigmoid's range (benchmarks/README.md)
    spectrum_period: float = 16.0
    color_matrix: list[list[float]] | None = None  # None = the ImageNet colour correlation
    # gain of the colour matrix's colour axes (all but the first); 0.6 keeps colourfulness in
    # photographs' range (benchmarks/README.md, issue 20)
    chroma: float = 0.6
    transforms: TransformSettings | None = field(default_factory=TransformSettings)
    fit: Literal["resize", "crop"] = "resize"  # fixed-size models: canvas -> native size
    tv: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    blur_every: int = 0
    blur_sigma: float = 0.5
    seed: int = 0
    preview_every: int = 16
    device: str = "auto"
    # 32: squeeze-excitation gates (MobileNetV3's hard sigmoids) need more than 16 to reopen
    relu_override_steps: int = 32
    channels_last: bool = True  # CUDA only; same numbers, faster convolutions
    amp: bool = False  # CUDA only; bfloat16 autocast of the model's forward
    init_sd: float = 0.01
    shared: list[list[int]] = field(default_factory=list)  # [(keyframes, factor)], interpolation
    # learning-rate schedule (schedule.py): constant, then a cosine over the last ``lr_anneal``
    # of the steps down to ``lr_final`` times ``lr``; 0 = a constant rate
    lr_anneal: float = 0.5
    lr_final: float = 0.05
    # the saved image is the mean of the images after each of the last ``average`` of the steps
    # (0: the last image); see render._TailAverage
    average: float = 0.0
    # early stop (schedule.EarlyStop): stop (after the anneal) once no image's objective gained
    # more than ``early_stop`` (relative) from one ``early_stop_window``-step window to the next
    early_stop: float = 0.0
    early_stop_window: int = 32
    # -- the article's regularization spectrum (regularizers.py, maco.py, prior.py) --------------
    bilateral_every: int = 0  # edge-preserving filter of the image every N steps (Tyka 2016)
    bilateral_sigma: float = 1.0  # its spatial sigma, pixels
    bilateral_range: float = 0.1  # its colour sigma, on the [0, 1] scale
    grad_blur: float = 0.0  # Gaussian sigma (px) of the image gradient each step (Øygard 2015)
    lap_levels: int = 0  # Laplacian-pyramid normalization of the gradient (Mordvintsev 2016)
    octaves: int = 1  # sizes optimized in turn, upsampling between (Mordvintsev 2015)
    octave_scale: float = 1.4  # size ratio of neighbouring octaves
    optimizer: Literal["adam", "l2", "linf"] = "adam"  # steepest ascent under L2 / L-infinity
    maco_spectrum: str | None = None  # param "maco": a saved spectrum or image folder (None: ours)
    maco_sha256: str | None = None  # pinned by the run (provenance): the spectrum's content hash
    prior: str | None = None  # param "prior": the generator ONNX file (latent -> image)
    prior_sha256: str | None = None  # pinned by the run (provenance): the generator file's hash
    prior_range: tuple[float, float] = (-1.0, 1.0)  # the generator's output value range

    def __post_init__(self) -> None:
        if isinstance(self.transforms, dict):
            self.transforms = TransformSettings.from_dict(self.transforms)
        if isinstance(self.prior_range, list):
            self.prior_range = tuple(
                self.prior_range
            )  # JSON gives a list; validate checks the length
        self.validate()

    def validate(self) -> None:
        """Raise a ``ConfigError`` that names the bad setting."""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"Render setting {name!r} {why}, got {getattr(self, name)!r}.")

        for name in (
            "steps",
            "batch",
            "preview_every",
            "blur_every",
            "relu_override_steps",
            "seed",
            "early_stop_window",
            "bilateral_every",
            "lap_levels",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(name, "must be a whole number >= 0")
        if self.batch < 1:
            raise bad("batch", "must be at least 1")
        if self.size is not None and (
            isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < MIN_SIZE
        ):
            raise bad("size", f"must be None or a whole number of pixels >= {MIN_SIZE}")
        for name in (
            "lr",
            "decay",
            "tv",
            "l1",
            "l2",
            "blur_sigma",
            "init_sd",
            "early_stop",
            "grad_blur",
            "spectrum_period",
            "chroma",
        ):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not np.isfinite(v)
                or v < 0
            ):
                raise bad(name, "must be a finite number >= 0")
        if self.lr <= 0:
            raise bad("lr", "must be positive")
        if self.chroma <= 0:
            raise bad("chroma", "must be positive (colours cannot be mapped back otherwise)")
        if self.param not in PARAM_KINDS:
            raise bad("param", f"must be one of {', '.join(PARAM_KINDS)}")
        self._validate_spectrum_settings(bad)
        for name in ("lr_anneal", "lr_final", "average"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise bad(name, "must be a number from 0 to 1")
        if self.early_stop_window < 1:
            raise bad("early_stop_window", "must be at least 1")
        if self.fit not in ("resize", "crop"):
            raise bad("fit", "must be 'resize' or 'crop'")
        if self.color_matrix is not None:
            m = np.asarray(self.color_matrix, dtype=float)
            if m.shape != (3, 3) or not np.isfinite(m).all():
                raise bad("color_matrix", "must be a 3x3 list of numbers or None")
        if self.transforms is not None and not isinstance(self.transforms, TransformSettings):
            raise bad("transforms", "must be TransformSettings or None")
        for pair in self.shared:
            if len(pair) != 2 or any(int(v) < 1 for v in pair):
                raise bad(
                    "shared", "must be a list of [keyframes, factor] pairs of positive numbers"
                )

    def _validate_spectrum_settings(self, bad: Any) -> None:
        """The regularization-spectrum settings (one sentence naming the setting, as above)."""
        for name in ("bilateral_sigma", "bilateral_range", "octave_scale"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
                raise bad(name, "must be a finite number")
            if v <= 0:
                raise bad(name, "must be positive")
        if isinstance(self.octaves, bool) or not isinstance(self.octaves, int) or self.octaves < 1:
            raise bad("octaves", "must be a whole number >= 1")
        if self.octaves > 1 and self.octave_scale <= 1:
            raise bad("octave_scale", "must be above 1 when there are several octaves")
        if self.lap_levels == 1:
            raise bad("lap_levels", "must be 0 (off) or at least 2 pyramid levels")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", f"must be one of {', '.join(OPTIMIZERS)}")
        for name in ("maco_spectrum", "prior", "maco_sha256", "prior_sha256"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, str) or not v.strip()):
                raise bad(name, "must be a file name or None")
        r = self.prior_range
        if (
            not isinstance(r, (tuple, list))
            or len(r) != 2
            or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in r)
            or not r[0] < r[1]
        ):
            raise bad("prior_range", "must be two finite numbers LOW,HIGH with LOW < HIGH")
        if self.param == "prior":
            if not self.prior:
                raise bad("prior", "must name a generator ONNX file when param is 'prior'")
            for name in ("blur_every", "bilateral_every"):
                if getattr(self, name):
                    raise bad(
                        name,
                        "filters pixels, but with a learned prior the generator's latent is "
                        "optimized; use 0 with param 'prior'",
                    )
            if self.octaves > 1:
                raise bad("octaves", "must be 1 with param 'prior' (the generator's size is fixed)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists, numbers, strings, None)."""
        d = asdict(self)
        d["prior_range"] = [float(v) for v in self.prior_range]
        d["transforms"] = self.transforms.to_dict() if self.transforms is not None else None
        d["color_matrix"] = (
            [list(map(float, r)) for r in self.color_matrix] if self.color_matrix else None
        )
        d["shared"] = [[int(a), int(b)] for a, b in self.shared]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RenderSettings:
        """Inverse of ``to_dict``; unknown keys are ignored so newer galleries still load."""
        if not isinstance(data, dict):
            raise ConfigError(f"Render settings must be a JSON object, got {type(data).__name__}.")
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for k, v in BEFORE_FIELD.items():  # a record made before a field existed used its value
            kwargs.setdefault(k, v)
        if "transforms" in kwargs and kwargs["transforms"] is not None:
            kwargs["transforms"] = TransformSettings.from_dict(kwargs["transforms"])
        try:
            return cls(**kwargs)
        except TypeError as e:
            raise ConfigError(f"Invalid render settings: {e}.") from None


# -- named recipes -------------------------------------------------------------------------------
#: Named recipes: ``RenderSettings`` overrides on today's defaults (``default`` is the defaults
#: themselves).  ``fidelity`` is the default chosen by the fidelity benchmark before the image
#: measures of issue 20; ``article`` is the article's recipe (Adam at 0.05, constant, 1/f
#: spectrum, the article's transform chain); ``natural`` is the default on Lucid's 1/f spectrum,
#: which bench_quality.py found closer to photographs (plausibility, colourfulness) at some cost
#: in the robust objective (benchmarks/README.md).  Steps, canvas, batch and seed are a render's
#: budget, not its recipe, so no recipe sets them.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "fidelity": {
        "lr": 0.08,
        "decay": 1.5,
        "spectrum_period": 0.0,
        "chroma": 1.0,
        "lr_anneal": 0.5,
        "lr_final": 0.05,
        "transforms": TransformSettings(),
    },
    "natural": {"decay": 1.0},
    "article": {
        "lr": 0.05,
        "decay": 1.0,
        "spectrum_period": 0.0,
        "chroma": 1.0,
        "lr_anneal": 0.0,
        "lr_final": 0.05,
        "transforms": TransformSettings.article(),
    },
}


def recipe(name: str, **overrides: Any) -> RenderSettings:
    """``RenderSettings`` of the named recipe (``RECIPES``), with ``overrides`` on top."""
    if name not in RECIPES:
        raise ConfigError(f"Unknown recipe {name!r}; known: {', '.join(RECIPES)}.")
    changes: dict[str, Any] = {k: (replace(v) if isinstance(v, TransformSettings) else v)
               for k, v in RECIPES[name].items()}  # fmt: skip
    return RenderSettings(**(changes | overrides))


def canvas_setting(px: int | None) -> int | None:
    """A requested canvas side as ``RenderSettings.size``: 0 or None is the model's own size,
    anything else at least ``MIN_SIZE`` (what the dock's and the CLI's sizes mean)."""
    if not px:
        return None
    return max(MIN_SIZE, int(px))


def size_refusal(settings: RenderSettings, input_spec: Any, who: str) -> str | None:
    """The sentence refusing an explicit canvas the model cannot take (a size-agnostic graph's
    size multiple, ``InputSpec.size_refusal``), else None: every front end refuses it rather
    than rounding an explicit size behind the user's back."""
    if settings.size is None or input_spec is None:
        return None
    return input_spec.size_refusal(settings.size, who)
