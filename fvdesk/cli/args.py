"""Argument types and flag groups of the ``fvdesk`` command (pure; unit-tested)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMANDS = ("layers", "info", "render", "atlas", "examples")


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class UsageError(Exception):
    """Bad arguments found after parsing (unknown layer, unit out of range): exit code 2."""


class Terminated(BaseException):
    """SIGTERM received (a batch scheduler's time limit, ``kill``)."""


class UnitSpec:
    """``all``, ``7``, ``0-63`` or a comma list of both (``0-3,7,9``); resolved per layer."""

    def __init__(self, text: str) -> None:
        self.text = text.strip()
        self.all = self.text.lower() == "all"
        self.ranges: list[tuple[int, int]] = []
        if self.all:
            return
        if not self.text:
            raise ValueError("the unit list is empty (use all, 7, 0-63 or 3,7,9)")
        for part in self.text.split(","):
            p = part.strip()
            lo_s, sep, hi_s = p.partition("-")
            try:
                lo = int(lo_s)
                hi = int(hi_s) if sep else lo
            except ValueError:
                raise ValueError(
                    f"{p!r} is not a unit number or range (use all, 7, 0-63 or 3,7,9)"
                ) from None
            if lo < 0 or hi < 0 or lo_s.strip() != lo_s or (sep and hi_s.strip() != hi_s):
                raise ValueError(f"{p!r} is not a unit number or range (use all, 7, 0-63 or 3,7,9)")
            if hi < lo:
                raise ValueError(f"the range {p!r} runs backwards")
            self.ranges.append((lo, hi))

    def resolve(self, count: int, what: str = "the layer") -> list[int]:
        """The unit indices, in order, without duplicates; ``ValueError`` when out of range."""
        if self.all:
            return list(range(count))
        out: dict[int, None] = {}
        for lo, hi in self.ranges:
            if hi >= count:
                valid = f"0-{count - 1}" if count > 0 else "none"
                raise ValueError(
                    f"unit {hi} is out of range for {what}, which has {count} units ({valid})"
                )
            out.update(dict.fromkeys(range(lo, hi + 1)))
        return list(out)

    def __repr__(self) -> str:
        return f"UnitSpec({self.text!r})"


def _unit_spec(text: str) -> UnitSpec:
    try:
        return UnitSpec(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _shard_arg(text: str) -> str:
    from fvdesk.core.output.atlas import parse_shard

    try:
        parse_shard(text, env={})
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def shard_and_rank(text: str | None) -> tuple[tuple[int, int] | None, int | None]:
    """``--shard`` of ``atlas`` and ``examples``: the shard (``parse_shard`` on the environment)
    and, under torchrun with ``auto``, the local rank whose GPU the process takes."""
    import os

    from fvdesk.core.output.atlas import parse_shard

    try:
        shard = parse_shard(text, env=os.environ) if text else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    rank = os.environ.get("LOCAL_RANK", "")
    return shard, (int(rank) if text == "auto" and shard and rank.isdigit() else None)


def _parse_number(text: str, kind: type, ok: Callable[[float], bool], rule: str) -> Any:
    """argparse ``type=`` helper: parse ``text`` as ``kind`` and check ``ok``, else say ``rule``."""
    try:
        v = kind(text)
    except ValueError:
        noun = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {noun}") from None
    if not ok(v):
        raise argparse.ArgumentTypeError(f"{text!r} {rule}")
    return v


def _positive(text: str) -> int:
    return _parse_number(text, int, lambda v: v >= 1, "must be at least 1")


def _nonneg(text: str) -> int:
    return _parse_number(text, int, lambda v: v >= 0, "must not be negative")


def _pos_float(text: str) -> float:
    return _parse_number(text, float, lambda v: v > 0, "must be positive")


def _input_size(text: str) -> tuple[int, int]:
    """``48x320`` or ``224``: (height, width) in 8..4096 px."""
    from fvdesk.core.model.sidecar import parse_input_size

    try:
        return parse_input_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: give HxW (e.g. 48x320) or one number, 8 to 4096 px"
        ) from None


def _preset(text: str) -> str:
    """A preset name or a JSON object (``{"range": [0, 255], "mean": [...], "bgr": true}``)."""
    from fvdesk.core.errors import ConfigError
    from fvdesk.core.model.preprocessing import parse_preprocessing

    value: Any = text
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"is not valid JSON ({e.msg})") from None
    try:
        parse_preprocessing(value, "user", "--preprocess")
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--preprocess ")) from None
    return text


def _position(text: str) -> tuple[int, int]:
    x, sep, y = text.partition(",")
    try:
        pos = (int(x), int(y))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y (two whole numbers)") from None
    if not sep or min(pos) < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not X,Y (two whole numbers >= 0)")
    return pos


def _option_type(opt: Any) -> Callable[[str], Any]:
    from fvdesk.core.errors import ConfigError

    def parse(text: str) -> Any:
        try:
            return opt.parse(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e).removeprefix(opt.flag + " ")) from None

    return parse


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    from fvdesk.core.optim.options import OPTIONS

    groups: dict[str, Any] = {}
    for o in OPTIONS:
        g = groups.get(o.group) or groups.setdefault(o.group, parser.add_argument_group(o.group))
        default = o.default()
        shown = ",".join(f"{v:g}" for v in default) if isinstance(default, tuple) else default
        text = f"{o.help} (default: {'native' if default is None else shown})"
        if o.kind is bool:
            g.add_argument(o.flag, dest=o.name, action=argparse.BooleanOptionalAction,
                           default=None, help=text)  # fmt: skip
        else:
            g.add_argument(o.flag, dest=o.name, type=_option_type(o), default=None,
                           metavar=o.name.upper(), help=text)  # fmt: skip
    from fvdesk.core.optim.settings import RECIPES

    groups["optimization"].add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default=None,
        help="named settings the other flags start from: 'default', 'fidelity' (the default "
        "before clipping and colour were measured), 'natural' (the default on a 1/f spectrum: "
        "closer to photographs, lower objective) or 'article' (Olah et al. 2017: Adam 0.05, "
        "1/f spectrum, the article's transforms) (default: default)",
    )
    tr = groups["transformation robustness"]
    tr.add_argument("--no-transforms", action="store_true",
                    help="no transformation robustness at all (the article's baseline)")  # fmt: skip
    groups["parameterization"].add_argument(
        "--color-from",
        type=Path,
        metavar="DIR",
        help="estimate the colour decorrelation matrix from the images in DIR instead of ImageNet's",
    )


def _add_article_flags(ren: argparse.ArgumentParser) -> None:
    """The article's other systems: directions, interpolation, the spectrum row, steepest descent."""
    g = ren.add_argument_group(
        "interaction and the article's figures",
        "Each writes its images as one gallery row; every item records how to render it again.",
    )
    g.add_argument(
        "--direction",
        metavar="random|FILE.npy",
        help="render directions in --layer's channel space instead of units: 'random' (seeded, "
        "see --directions and --direction-seed) or a .npy file of one vector (C,) or one per row (K, C)",
    )
    g.add_argument("--directions", type=_positive, default=1, metavar="N",
                   help="with --direction random: how many random directions (default: 1)")  # fmt: skip
    g.add_argument("--direction-seed", type=_nonneg, default=0, metavar="S",
                   help="with --direction random: the first direction's seed (default: 0)")  # fmt: skip
    g.add_argument(
        "--interpolate",
        nargs=2,
        metavar=("A", "B"),
        help="interpolate from objective A to B (each L:U or an expression like --objective's) "
        "in --frames frames, with shared low-resolution parameters and alignment",
    )
    g.add_argument("--frames", type=_positive, default=6, metavar="N",
                   help="frames of --interpolate, at least 2 (default: 6)")  # fmt: skip
    g.add_argument("--alignment", type=_nonneg_float, default=None, metavar="W",
                   help="--interpolate's alignment weight, relative to the objective (default: 0.3)")  # fmt: skip
    g.add_argument(
        "--spectrum",
        action="store_true",
        help="the regularization spectrum row: the unit (--layer --units U, or --objective EXPR) "
        "rendered unregularized, with each regularizer, transforms, the decorrelated "
        "parameterization, MACO and the learned prior (--prior)",
    )
    g.add_argument(
        "--steepest",
        action="store_true",
        help="the steepest-descent view: the first step under the L2, L-infinity and decorrelated "
        "Fourier metrics from one start image, and the renders after --steps steps of each",
    )


def _nonneg_float(text: str) -> float:
    return _parse_number(text, float, lambda v: v >= 0, "must not be negative")


def _add_images_flags(parser: argparse.ArgumentParser, *, clusters: bool = False) -> None:
    g = parser.add_argument_group("dataset examples")
    g.add_argument(
        "--images",
        type=Path,
        metavar="DIR",
        help="a folder of your images (recursive, any format Pillow reads): each unit's items get "
        "the images that excite it most and least, with crops (cached per model and folder)",
    )
    g.add_argument("--top", type=_nonneg, default=9, metavar="K",
                   help="most exciting images per unit (default: 9)")  # fmt: skip
    g.add_argument("--bottom", type=_nonneg, default=9, metavar="K",
                   help="least exciting images per unit (default: 9)")  # fmt: skip
    g.add_argument("--engine", choices=("auto", "torch", "onnxruntime"), default="auto",
                   help="what runs the activation pass (default: auto, the faster one measured "
                   "for the device)")  # fmt: skip
    if clusters:
        g.add_argument(
            "--cluster-facets",
            action="store_true",
            help="with --images and --diversity N: one facet per k-means cluster of the unit's "
            "top images (Wei et al.), each steered toward its cluster, instead of the diversity term",
        )
