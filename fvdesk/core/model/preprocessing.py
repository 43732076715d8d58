"""How an RGB image in [0, 1] becomes what the model was trained on: the presets and their maths.

Torch is imported only inside ``Preprocessing.apply`` so that settings, provenance records and the
app's preset menus can use these values without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from fvdesk.core.errors import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB image in [0, 1] becomes the tensor the model was trained on.

    x -> lo + (hi - lo) * x, then channel order (BGR when ``bgr``), then (x - mean) / std per
    channel in the model's channel order.  ``source`` says where the choice came from so the UI
    can warn when it is only a default.
    """

    preset: str  # a key of PRESETS, or "custom"
    lo: float = 0.0
    hi: float = 1.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    bgr: bool = False
    source: str = "default"  # "metadata" | "sidecar" | "default" | "user"

    def apply(self, x01: torch.Tensor) -> torch.Tensor:
        """Map an NCHW batch in [0, 1] (C = 1 or 3) to model units, differentiably."""
        import torch

        x = self.lo + (self.hi - self.lo) * x01
        c = x.shape[1]
        if self.bgr and c == 3:
            x = x.flip(1)
        mean = torch.tensor(_fit(self.mean, c), dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        std = torch.tensor(_fit(self.std, c), dtype=x.dtype, device=x.device).view(1, c, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return {
            "preset": self.preset,
            "range": [self.lo, self.hi],
            "mean": list(self.mean),
            "std": list(self.std),
            "bgr": self.bgr,
            "source": self.source,
        }

    def describe(self) -> str:
        order = "BGR" if self.bgr else "RGB"
        return (
            f"{self.preset}: [{self.lo:g}, {self.hi:g}] {order}, mean {list(self.mean)}, "
            f"std {list(self.std)} ({self.source})"
        )


def _fit(values: Sequence[float], c: int) -> list[float]:
    vals = list(values)
    if len(vals) == c:
        return vals
    if c == 1:
        return [sum(vals) / len(vals)]
    if len(vals) == 1:
        return vals * c
    raise ValueError(f"preprocessing has {len(vals)} channel values for a {c}-channel input")


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Presets a user can pick; ``imagenet`` is the documented default (torchvision/timm convention).
PRESETS: dict[str, Preprocessing] = {
    "imagenet": Preprocessing("imagenet", 0.0, 1.0, IMAGENET_MEAN, IMAGENET_STD),
    "unit": Preprocessing("unit", 0.0, 1.0),
    "symmetric": Preprocessing("symmetric", -1.0, 1.0),
    "byte": Preprocessing("byte", 0.0, 255.0),
    # Caffe: BGR, 0-255, minus the per-channel mean (in BGR order), no std.
    "caffe": Preprocessing("caffe", 0.0, 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0), True),
}
DEFAULT_PRESET = "imagenet"


def preset(name: str, source: str = "user") -> Preprocessing:
    """A preset by name, tagged with where the choice came from."""
    try:
        return replace(PRESETS[name], source=source)
    except KeyError:
        raise ValueError(
            f"unknown preprocessing preset {name!r}; choose one of {sorted(PRESETS)}"
        ) from None


def parse_preprocessing(value: Any, source: str, where: str) -> Preprocessing:
    """A preset name or a ``{"preset"|"range"|"mean"|"std"|"bgr"}`` mapping -> ``Preprocessing``.

    ``where`` names the file (or metadata key) for the one-sentence ``ConfigError``.
    """
    if isinstance(value, str):
        if value not in PRESETS:
            raise ConfigError(
                f"{where} names an unknown preprocessing preset {value!r} (known: {', '.join(sorted(PRESETS))})."
            )
        return replace(PRESETS[value], source=source)
    if not isinstance(value, dict):
        raise ConfigError(
            f"{where} has a preprocessing entry that is neither a preset name nor an object."
        )
    name = value.get("preset")
    if (
        name is not None
        and name != "custom"
        and not any(k in value for k in ("range", "mean", "std", "bgr"))
    ):
        return parse_preprocessing(name, source, where)
    base = PRESETS.get(name) if isinstance(name, str) else None
    base = base or Preprocessing("custom")
    try:
        lo, hi = value.get("range", [base.lo, base.hi])
        lo, hi = float(lo), float(hi)
        mean = tuple(float(v) for v in _as_list(value.get("mean", base.mean)))
        std = tuple(float(v) for v in _as_list(value.get("std", base.std)))
        bgr = value.get("bgr", base.bgr)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{where} has preprocessing values that are not numbers (range, mean, std must be numeric)."
        ) from None
    if not isinstance(bgr, bool):
        raise ConfigError(f"{where} has a preprocessing 'bgr' value that is not true or false.")
    if not (mean and std and len(mean) in (1, 3) and len(std) in (1, 3)):
        raise ConfigError(f"{where} needs 1 or 3 preprocessing mean and std values.")
    if (
        not all(math.isfinite(v) for v in (lo, hi, *mean, *std))
        or lo == hi
        or any(s == 0 for s in std)
    ):
        raise ConfigError(
            f"{where} has a degenerate preprocessing (empty range, zero std or non-finite values)."
        )
    preset_name = "custom"
    if isinstance(name, str) and name in PRESETS:
        p = PRESETS[name]
        if (p.lo, p.hi, p.mean, p.std, p.bgr) == (lo, hi, mean, std, bgr):
            preset_name = name
    return Preprocessing(preset_name, lo, hi, mean, std, bgr, source)


def _as_list(v: Any) -> list:
    if isinstance(v, (int, float)):
        return [v]
    return list(v)
