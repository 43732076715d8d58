"""The ``fvdesk`` command: the GUI when given no command, headless subcommands otherwise.

``fvdesk`` or ``fvdesk MODEL.onnx`` start the desktop app (PySide6 is imported only then);
``fvdesk layers|info|render|atlas ...`` run on the Qt-free core.  Heavy imports (torch, the
loader) happen inside the commands so ``--help`` stays fast.

Exit codes: 0 done, 1 failed (one-line ``FvdeskError`` message on stderr; ``--debug`` adds the
traceback), 2 bad arguments (argparse errors, unknown layers with suggestions, units out of range),
130 interrupted (Ctrl+C), 143 terminated (SIGTERM).  Both interruptions leave every gallery
consistent; re-running the same command resumes an atlas.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from fvdesk.core.optim.jobs import UNIT_KINDS
from fvdesk.core.progress import EtaEstimator
from fvdesk.core.progress import format_duration as _duration

COMMANDS = ("layers", "info", "render", "atlas", "examples")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143


class UsageError(Exception):
    """Bad arguments found after parsing (unknown layer, unit out of range): exit code 2."""


class Terminated(BaseException):
    """SIGTERM received (a batch scheduler's time limit, ``kill``)."""


# ------------------------------------------------------------------------------------------------
# Argument helpers (pure; unit-tested)
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Progress on a terminal
# ------------------------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on stderr, drawn only on a terminal (silent in logs and pipes)."""

    def __init__(
        self, total: int, *, enabled: bool, label: str = "", stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.total = max(total, 0)
        self.label = label
        self.done = 0
        self.step = self.steps = 0
        self.start = time.monotonic()
        self._eta = EtaEstimator(start=self.start)
        self._last = 0.0
        self._width = 0

    @staticmethod
    def wanted(quiet: bool, stream: TextIO | None = None) -> bool:
        s = stream or sys.stderr
        return not quiet and hasattr(s, "isatty") and s.isatty()

    def update(
        self,
        *,
        done: int | None = None,
        step: int | None = None,
        steps: int | None = None,
        label: str | None = None,
        force: bool = False,
    ) -> None:
        if done is not None:
            self.done = done
        if step is not None:
            self.step = step
        if steps is not None:
            self.steps = steps
        if label is not None:
            self.label = label
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        frac = self.done / self.total if self.total else 1.0
        bar_w = 24
        filled = int(bar_w * frac)
        bar = "#" * filled + "." * (bar_w - filled)
        est = self._eta.update(frac, now=now)
        eta = f" {est.eta_text}" if est.eta_text and self.done < self.total else ""
        step = f" step {self.step}/{self.steps}" if self.steps else ""
        line = f"{self.label} [{bar}] {self.done}/{self.total}{step} {_duration(est.elapsed)}{eta}"
        self._draw(line)

    def resume(self, done: int) -> None:
        """Start counting at ``done`` units already finished (they say nothing about speed)."""
        self._eta.reset(time.monotonic(), done / self.total if self.total else 0.0)
        self.update(done=done, force=True)

    def message(self, text: str) -> None:
        """Print a line above the bar (notices), or plainly when the bar is off."""
        if self.enabled:
            self._draw("")
            self.stream.write("\r" + text + "\n")
            self._last = 0.0
            self.update(force=True)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(force=True)
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, line: str) -> None:
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)


# ------------------------------------------------------------------------------------------------
# Render settings as flags (from the one table in fvdesk.core.optim.options)
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# The parser
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from fvdesk import __version__

    p = argparse.ArgumentParser(
        prog="fvdesk",
        description="Feature visualization for ONNX image classifiers. Without a command, starts the "
        "desktop app (optionally opening MODEL.onnx).",
        epilog="Exit codes: 0 done, 1 failed, 2 bad arguments, 130 interrupted. "
        "Without MODEL, commands use the embedded demo model.",
    )
    p.add_argument("--version", action="version", version=f"fvdesk {__version__}")
    p.add_argument(
        "--self-test",
        action="store_true",
        help="check this installation end to end (demo model, parity, renders on every device, "
        "a gallery, the app window), one line per check; exit 0 when all pass",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "model", nargs="?", metavar="MODEL", help="ONNX file (default: the embedded demo model)"
    )
    common.add_argument(
        "--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps"
    )
    common.add_argument(
        "--input",
        dest="input_name",
        metavar="NAME",
        help="which graph input is the image, when several could be",
    )
    common.add_argument(
        "--preprocess",
        type=_preset,
        metavar="PRESET|JSON",
        help="input preprocessing for this run: a preset (imagenet, unit, symmetric, byte, caffe) or "
        'JSON like \'{"range": [0, 255], "mean": [103.9, 116.8, 123.7], "bgr": true}\'',
    )
    common.add_argument(
        "--labels",
        type=Path,
        metavar="FILE",
        help="class names for this run (one per line, or a JSON list or {index: name} object)",
    )
    common.add_argument(
        "--remember",
        action="store_true",
        help="also save --preprocess/--labels in the sidecar MODEL.fvdesk.json next to the model, "
        "so the app and later runs use them",
    )
    common.add_argument(
        "--no-parity",
        action="store_true",
        help="skip the torch-vs-onnxruntime parity check while loading",
    )
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bar or notices")
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")

    lay = sub.add_parser(
        "layers",
        parents=[common],
        help="list the layers (names, ops, shapes, channels)",
        description="The layer tree with op types, shapes (batch first) and channels. Names are what --layer accepts.",
    )
    lay.add_argument("--filter", metavar="TEXT", help="only layers whose name or op contains TEXT")
    lay.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of {name, op, shape, channels, kind, index}",
    )
    lay.set_defaults(func=cmd_layers)

    inf = sub.add_parser(
        "info",
        parents=[common],
        help="input, preprocessing, labels, parity, device",
        description="What fvdesk found out about a model: input spec, preprocessing in force, labels, parity with onnxruntime, device.",
    )
    inf.add_argument("--json", action="store_true", help="print JSON")
    inf.set_defaults(func=cmd_info)

    opt = argparse.ArgumentParser(add_help=False)
    _add_setting_flags(opt)

    ren = sub.add_parser(
        "render",
        parents=[common, opt],
        help="render units, or a combination of them, into a gallery folder",
        description="Render units of one layer, or one weighted combination of units, and write a gallery "
        "(PNGs, contact_sheet.png, gallery.json, index.html). Every setting of the app is a flag below. "
        "--param pixel --no-decorrelate --no-transforms is the article's unregularized baseline. "
        "--from GALLERY/gallery.json renders saved items again from their provenance records.",
    )
    ren.add_argument(
        "--layer",
        "-l",
        metavar="LAYER",
        help="layer name as `fvdesk layers` prints it (default for logit/prob: the classifier output)",
    )
    ren.add_argument(
        "--units",
        "-u",
        type=_unit_spec,
        default=UnitSpec("all"),
        metavar="SPEC",
        help="all, 7, 0-63 or 3,7,9 (default: all)",
    )
    ren.add_argument(
        "--objective",
        "-o",
        default="channel",
        metavar="KIND|EXPR",
        help=f"what to maximize: {', '.join(UNIT_KINDS)} (default: channel) for --units of --layer, "
        "or a combination like 'L:12 + 0.5*L:40 - L:7' (L:U@X,Y is a neuron; prob(L:U) names a kind; "
        "spaces around + and -)",
    )
    ren.add_argument(
        "--position",
        type=_position,
        metavar="X,Y",
        help="the neuron's position on the layer's grid (--objective neuron; default: the centre)",
    )
    ren.add_argument(
        "--diversity",
        type=_positive,
        metavar="N",
        help="N diverse images per unit (the article's diversity term)",
    )
    ren.add_argument(
        "--negative",
        action="store_true",
        help="minimize instead of maximize (the opposite example)",
    )
    _add_article_flags(ren)
    ren.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="gallery folder (created, or added to when it holds a gallery of the same model); "
        "optional with --from",
    )
    ren.add_argument(
        "--from",
        dest="from_gallery",
        type=Path,
        metavar="GALLERY",
        help="render saved items again from their provenance (a gallery folder or its gallery.json) "
        "and say whether the pixels match; MODEL defaults to the file the gallery names",
    )
    ren.add_argument(
        "--item",
        type=_nonneg,
        action="append",
        metavar="N",
        help="with --from: only item N (as numbered in the gallery's index; repeatable)",
    )
    _add_images_flags(ren, clusters=True)
    ren.set_defaults(func=cmd_render)

    atl = sub.add_parser(
        "atlas",
        parents=[common, opt],
        help="render every unit of many layers (resumable, shardable)",
        description="Render every unit of the chosen layers into one gallery per layer under DIR, plus DIR/index.html. "
        "Each unit is committed as it finishes: re-running the same command after a crash resumes. "
        "--shard I/N splits the work between processes or machines sharing DIR; --merge DIR rebuilds the indexes afterwards.",
    )
    atl.add_argument("--out", type=Path, metavar="DIR", help="atlas folder")
    atl.add_argument(
        "--merge",
        type=Path,
        metavar="DIR",
        help="only rebuild the indexes of the atlas in DIR (after sharded runs); needs no model",
    )
    atl.add_argument(
        "--layers",
        nargs="+",
        metavar="LAYER",
        help="layer names or glob patterns (default: all feature-map layers)",
    )
    atl.add_argument(
        "--units-per-layer",
        type=_positive,
        metavar="N",
        help="only the first N units of each layer",
    )
    atl.add_argument(
        "--objective",
        choices=("channel", "neuron"),
        default="channel",
        help="per-unit objective (default: channel)",
    )
    atl.add_argument(
        "--shard",
        type=_shard_arg,
        metavar="I/N",
        help="render every N-th unit starting at I; 'auto' reads LOCAL_RANK/WORLD_SIZE (torchrun) or SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT",
    )
    atl.add_argument(
        "--force",
        action="store_true",
        help="resume even if DIR was rendered with other settings, re-rendering those units",
    )
    _add_images_flags(atl)
    atl.set_defaults(func=cmd_atlas)
    _add_examples_parser(sub, common)
    return p


# ------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see the module docstring)."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if _wants_gui(args_list):
        return _run_gui(args_list)
    parser = build_parser()
    try:
        args = parser.parse_args(args_list)
    except SystemExit as e:  # argparse: --help/--version (0) or bad arguments (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if getattr(args, "self_test", False) and not getattr(args, "command", None):
        from fvdesk.selftest import run_self_test

        return run_self_test()
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    previous = _install_sigterm()
    try:
        return args.func(args)
    except UsageError as e:
        print(f"fvdesk {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\nfvdesk: interrupted.", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        print("\nfvdesk: terminated.", file=sys.stderr)
        return EXIT_TERMINATED
    except Exception as e:  # noqa: BLE001 - one line for users, the traceback with --debug
        from fvdesk.core.errors import FvdeskError

        if args.debug:
            traceback.print_exc()
        if isinstance(e, FvdeskError):
            print(f"fvdesk: error: {e}", file=sys.stderr)
        else:
            where = "" if args.debug else " (run with --debug for the traceback)"
            print(f"fvdesk: internal error: {type(e).__name__}: {e}{where}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _wants_gui(argv: list[str]) -> bool:
    """The app unless a command (or --help/--version) is asked for: ``fvdesk``,
    ``fvdesk MODEL.onnx``, ``fvdesk MODEL.onnx --device cpu``, ``fvdesk --device cuda:1``."""
    if any(a in ("-h", "--help", "--version", "--self-test") for a in argv):
        return False
    if not argv or argv[0].startswith("-"):
        return not any(a in COMMANDS for a in argv)
    first = argv[0]
    if first in COMMANDS:
        return False
    return first.lower().endswith(".onnx") or Path(first).exists()


def gui_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fvdesk", description="Start the desktop app.")
    p.add_argument(
        "model", nargs="?", metavar="MODEL", help="ONNX file to open (default: the demo)"
    )
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (default: the app's setting)")
    return p


def _run_gui(argv: list[str]) -> int:
    try:
        args = gui_parser().parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    from fvdesk.core.display_check import check_display

    problem = check_display()  # before Qt loads: its own failure is an abort and a core dump
    if problem is not None:
        print(f"fvdesk: error: {problem}", file=sys.stderr)
        return EXIT_FAILED
    try:
        from fvdesk.gui.app import run_app
    except ImportError as e:
        print(
            f"fvdesk: error: the desktop app cannot start ({e}); install PySide6-Essentials, "
            "or use the headless commands (fvdesk --help).",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return run_app(args.model or None, device=args.device)


def _install_sigterm() -> Any:
    """Turn SIGTERM into an exception so atomic writes finish their cleanup (main thread only)."""

    def handler(_signum: int, _frame: object) -> None:
        raise Terminated()

    try:
        return signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # not the main thread, or a platform without SIGTERM
        return None


# ------------------------------------------------------------------------------------------------
# Shared command plumbing
# ------------------------------------------------------------------------------------------------
def _model_path(args: argparse.Namespace) -> Path:
    if args.model:
        return Path(args.model)
    from fvdesk.core.resources import demo_model_path

    return demo_model_path()


def _device(args: argparse.Namespace, local_rank: int | None = None) -> Any:
    import torch

    from fvdesk.core.device import pick_device

    name = args.device
    try:
        torch.device("cpu" if name == "auto" else name)
    except (RuntimeError, TypeError):
        raise UsageError(
            f"{name!r} is not a device name (use auto, cpu, cuda, cuda:N or mps)"
        ) from None
    if name == "auto" and local_rank is not None and torch.cuda.is_available():
        return torch.device(
            "cuda", local_rank % torch.cuda.device_count()
        )  # one GPU per torchrun rank
    return pick_device(name)


def _load(args: argparse.Namespace, *, device: Any = None, progress: Progress | None = None) -> Any:
    from fvdesk.core.errors import AmbiguousInputError
    from fvdesk.core.model.loader import load_model

    path = _model_path(args)
    device = device if device is not None else _device(args)
    bar = progress or Progress(1, enabled=Progress.wanted(args.quiet), label=f"loading {path.name}")

    def report(fraction: float, message: str) -> None:
        bar.update(done=0, label=f"loading {path.name}: {message}"[:70])

    try:
        model = load_model(
            path,
            device=device,
            progress=report if bar.enabled else None,
            input_name=args.input_name,
            preprocessing=args.preprocess,
            check_parity=not args.no_parity,
        )
    except AmbiguousInputError as e:
        raise UsageError(f"{e} Choose one with --input NAME ({', '.join(e.candidates)}).") from None
    finally:
        if bar.enabled:
            bar._draw("")
            bar.stream.write("\r")
            bar.stream.flush()
    labels = getattr(args, "labels", None)
    if labels is not None:
        model.set_labels(labels, persist=False)
    if getattr(args, "remember", False):
        _remember(args, model)
    return model


def _remember(args: argparse.Namespace, model: Any) -> None:
    """``--remember``: the user asked for the sidecar to be written (it is never implicit)."""
    from fvdesk.core.model.sidecar import save_sidecar, sidecar_path

    if args.preprocess is None and getattr(args, "labels", None) is None:
        raise UsageError("--remember saves --preprocess and/or --labels; give at least one")
    save_sidecar(
        model.path,
        preprocessing=model.preprocessing if args.preprocess is not None else None,
        labels=args.labels.resolve() if getattr(args, "labels", None) is not None else None,
    )
    if not args.quiet:
        print(f"Saved the choice in {sidecar_path(model.path)}.", file=sys.stderr)


def _resolve_layer(model: Any, name: str) -> Any:
    from fvdesk.core.errors import RenderError

    graph = model.graph
    if name in graph:
        return graph[name]
    if any(x.name == name for x in graph.unavailable):
        try:
            graph[name]
        except RenderError as e:
            raise UsageError(str(e)) from None
    hint = graph.suggest(name)
    more = f"; did you mean {', '.join(hint)}?" if hint else "; `fvdesk layers` lists them."
    raise UsageError(f"the model {model.name} has no layer named {name!r}{more}")


def _shape_list(shape: Sequence[int | None]) -> list[int | None]:
    return [None if d is None else int(d) for d in shape]


def _shape_text(shape: Sequence[int | None]) -> str:
    from fvdesk.core.model.layers import format_shape

    return format_shape(shape, batch=True, sep="x")


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------------
# layers
# ------------------------------------------------------------------------------------------------
def layer_dict(layer: Any) -> dict[str, Any]:
    """The JSON form of a layer (``fvdesk layers --json``)."""
    d = {
        "name": layer.name,
        "op": layer.op,
        "shape": _shape_list(layer.shape),
        "channels": layer.channels,
        "kind": layer.kind,
        "index": layer.index,
        "describe": layer.describe(),
        "available": layer.available,
    }
    if layer.kind == "tokens":
        d.update(layout=layer.layout, grid=list(layer.grid or ()), extra_tokens=layer.extra_tokens)
    if layer.kind == "attention":
        d["axes"] = list(layer.axes)
    if not layer.available:
        d["reason"] = layer.reason
    return d


def _layer_note(layer: Any, graph: Any) -> str:
    """What the LAYERS table adds after the channel count."""
    if not layer.available:
        return "  (not converted)"
    if layer.name == graph.logits_name:
        return "  (logits)"
    if layer.kind in ("tokens", "attention"):
        return f"  ({layer.describe()})"
    return ""


def cmd_layers(args: argparse.Namespace) -> int:
    model = _load(args)
    graph = model.graph
    if args.json:
        layers = graph.filter(args.filter) if args.filter else list(graph)
        cut = [
            x for x in graph.unavailable if not args.filter or x in graph.filter_all(args.filter)
        ]
        _emit_json([layer_dict(x) for x in [*layers, *cut]])
        return EXIT_OK
    out = sys.stdout
    if args.filter:
        layers = graph.filter_all(args.filter)
        if not layers:
            print(f"No layer of {model.name} matches {args.filter!r}.", file=sys.stderr)
            return EXIT_OK
        rows = [(x.name, x) for x in layers]
    else:
        rows = []

        def walk(node: Any, depth: int) -> None:
            if node.layer is not None:
                rows.append(("  " * depth + node.layer.name, node.layer))
                return
            if depth >= 0 and node.label:
                rows.append(("  " * depth + node.label + "/", None))
            for child in node.children:
                walk(child, depth + 1)

        root = graph.tree
        for child in root.children if root.layer is None else [root]:
            walk(child, 0)
    width = min(max((len(n) for n, _ in rows), default=4) + 2, 80)
    out.write(f"{'LAYER':<{width}}{'OP':<20}{'SHAPE':<20}{'CHANNELS':>8}\n")
    for text, layer in rows:
        if layer is None:
            out.write(f"{text}\n")
        else:
            units = str(layer.channels) if layer.channels else "?"
            shape = _shape_text(layer.shape) if layer.shape else "?"
            out.write(
                f"{text:<{width}}{layer.op:<20}{shape:<20}{units:>8}{_layer_note(layer, graph)}\n"
            )
    kinds = [x.kind for x in graph]
    n_feat = kinds.count("feature")
    parts = [f"{n_feat} feature maps"]
    if kinds.count("tokens"):
        parts.append(f"{kinds.count('tokens')} token layers")
    if kinds.count("attention"):
        parts.append(f"{kinds.count('attention')} attention tensors")
    parts.append(f"{kinds.count('vector')} vectors")
    out.write(f"\n{len(graph)} layers ({', '.join(parts)}) in {model.name}.\n")
    if model.conversion is not None:
        out.write(f"{model.conversion.describe()}\n")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------
# info
# ------------------------------------------------------------------------------------------------
def conversion_dict(model: Any) -> dict[str, Any]:
    """``fvdesk info``'s account of the conversion: complete, or where it stopped and why."""
    cut = model.conversion
    if cut is None:
        return {"complete": True, "status": "complete"}
    return {
        "complete": False,
        "status": cut.describe(),
        "stopped_at": cut.stopped_at,
        "op": cut.op,
        "reason": cut.reason,
        "nodes_left_out": cut.cut_nodes,
        "nodes": cut.total_nodes,
        "ops_left_out": dict(cut.cut_ops),
        "boundary": list(cut.boundary),
    }


def cmd_info(args: argparse.Namespace) -> int:
    from fvdesk.core.device import describe_device

    device = _device(args)
    model = _load(args, device=device)
    spec = model.input
    n_feat = sum(1 for x in model.graph if x.kind == "feature")
    info: dict[str, Any] = {
        "model": {"file": model.name, "path": str(model.path), "sha256": model.sha256},
        "input": {
            "name": spec.name,
            "layout": spec.layout,
            "channels": spec.channels,
            "height": spec.height,
            "width": spec.width,
            "fixed_size": spec.fixed_size,
            "max_batch": spec.max_batch,
            "dtype": spec.dtype,
        },
        "preprocessing": {
            **model.preprocessing.to_dict(),
            "describe": model.preprocessing.describe(),
        },
        "labels": {"source": model.labels_source, "count": len(model.labels or [])},
        "layers": {
            "count": len(model.graph),
            "feature_maps": n_feat,
            "token_layers": sum(1 for x in model.graph if x.kind == "tokens"),
            "attention_tensors": sum(1 for x in model.graph if x.kind == "attention"),
            "not_converted": len(model.graph.unavailable),
            "logits": model.graph.logits_name,
        },
        "conversion": conversion_dict(model),
        "parity": None,
        "device": describe_device(device),
        "warnings": list(model.warnings),
    }
    if model.parity is not None:
        par = model.parity
        info["parity"] = {
            "ok": par.ok,
            "max_abs_diff": par.max_abs_diff,
            "rel_diff": par.rel_diff,
            "feature_rel_diff": par.feature_rel_diff,
            "feature_layer": par.feature_layer,
            "tolerance": par.tolerance,
            "describe": par.describe(),
        }
    if args.json:
        _emit_json(info)
        return EXIT_OK
    size = f"{spec.height}x{spec.width}" + (
        " (fixed)" if spec.fixed_size else " (any size; default shown)"
    )
    batch = "any" if spec.max_batch is None else str(spec.max_batch)
    labels = (
        f"{info['labels']['count']} from {model.labels_source}"
        if model.labels
        else f"none ({model.labels_source})"
    )
    lines = [
        ("model", f"{model.name}  sha256 {model.sha256[:16]}…"),
        (
            "input",
            f"{spec.name!r} {spec.layout} {spec.channels}ch {size}, batch {batch}, {spec.dtype}",
        ),
        ("preprocessing", model.preprocessing.describe()),
        ("labels", labels),
        (
            "layers",
            f"{len(model.graph)} ({n_feat} feature maps); logits: {model.graph.logits_name or 'not found'}",
        ),
        ("conversion", info["conversion"]["status"]),
        ("parity", model.parity.describe() if model.parity is not None else "not checked"),
        ("device", info["device"]),
    ]
    lines += [("warning", w) for w in model.warnings]
    for k, v in lines:
        print(f"{k + ':':<15}{v}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------------
# render
# ------------------------------------------------------------------------------------------------
def render_settings(args: argparse.Namespace, **extra: Any) -> Any:
    """``RenderSettings`` from the engine's defaults, overridden by the flags given."""
    from fvdesk.core.optim import options
    from fvdesk.core.optim.settings import RenderSettings

    base = RenderSettings(**extra)
    if getattr(args, "no_transforms", False):
        base.transforms = None
    given = {
        o.name: getattr(args, o.name)
        for o in options.OPTIONS
        if getattr(args, o.name, None) is not None
    }
    if base.transforms is None:
        given = {k: v for k, v in given.items() if not options.option(k).transform}
    folder = getattr(args, "color_from", None)
    if folder is not None:
        from fvdesk.core.optim.param import color_matrix_from_folder

        base.color_matrix = color_matrix_from_folder(folder)
    if given.get("prior") and "param" not in given:
        given["param"] = "prior"  # --prior FILE: optimize the generator's latent
    return options.apply(base, given)


def _layer_kind(model: Any) -> Callable[[str], str]:
    from fvdesk.core.optim.jobs import default_kind

    return lambda name: default_kind(model.graph[name]) if name in model.graph else "channel"


def render_spec(args: argparse.Namespace, model: Any) -> Any:
    """The job spec the render flags describe (a combination when --objective is an expression)."""
    from fvdesk.core.errors import FvdeskError
    from fvdesk.core.optim.jobs import CombinationJob, UnitJob, parse_objective

    objective = args.objective
    facets = args.diversity or 1
    article = _article_spec(args, model)
    if article is not None:
        return article
    try:
        if objective not in UNIT_KINDS:
            if ":" not in objective:
                raise UsageError(
                    f"--objective {objective!r} is neither a kind ({', '.join(UNIT_KINDS)}) "
                    "nor a combination like 'L:12 + 0.5*L:40'"
                )
            terms = parse_objective(objective, _layer_kind(model))
            for t in terms:
                _resolve_layer(model, t.layer)
            spec: Any = CombinationJob(terms, negative=args.negative, facets=facets)
        else:
            spec = UnitJob(
                _spec_layer(args, model).name,
                tuple(_spec_units(args, model)),
                kind=objective,
                negative=args.negative,
                facets=facets,
                x=args.position[0] if args.position else None,
                y=args.position[1] if args.position else None,
            )
        spec.validate(model.graph)
    except FvdeskError as e:
        raise UsageError(str(e)) from None
    return spec


def _article_spec(args: argparse.Namespace, model: Any) -> Any:
    """The spec of --direction, --interpolate, --spectrum or --steepest (``None``: none given)."""
    from fvdesk.core.errors import FvdeskError
    from fvdesk.core.optim import jobs

    chosen = [f for f, on in (("--direction", args.direction), ("--interpolate", args.interpolate),
              ("--spectrum", args.spectrum), ("--steepest", args.steepest)) if on]  # fmt: skip
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} cannot be combined; choose one")
    if not chosen:
        return None
    try:
        if args.direction:
            layer = _spec_layer(args, model).name
            common = {"negative": args.negative, "facets": args.diversity or 1}
            if args.direction == "random":
                seeds = tuple(range(args.direction_seed, args.direction_seed + args.directions))
                spec: Any = jobs.DirectionJob(layer, seeds=seeds, **common)
            else:
                spec = jobs.DirectionJob.from_file(layer, args.direction, **common)
        elif args.interpolate:
            a, b = (_terms_of(args, model, text) for text in args.interpolate)
            w = jobs.InterpolationJob.alignment_weight if args.alignment is None else args.alignment
            spec = jobs.InterpolationJob(a, b, frames=args.frames, alignment_weight=w)
        else:
            terms = _target_terms(args, model)
            spec = jobs.SteepestJob(terms) if args.steepest else jobs.SpectrumJob(terms)
        spec.validate(model.graph)
    except FvdeskError as e:
        raise UsageError(str(e)) from None
    return spec


def _terms_of(args: argparse.Namespace, model: Any, text: str) -> Any:
    from fvdesk.core.optim.jobs import parse_objective

    terms = parse_objective(text, _layer_kind(model))
    for t in terms:
        _resolve_layer(model, t.layer)
    return terms


def _target_terms(args: argparse.Namespace, model: Any) -> Any:
    """One objective for --spectrum/--steepest: --objective EXPR, or one unit of --layer."""
    from fvdesk.core.optim.jobs import Term

    if args.objective not in UNIT_KINDS:
        return _terms_of(args, model, args.objective)
    layer = _spec_layer(args, model)
    units = _spec_units(args, model)
    if args.objective == "deepdream" or len(units) != 1:
        raise UsageError(
            f"{'--spectrum' if args.spectrum else '--steepest'} renders one objective: give one unit "
            "with --units U (or an --objective expression)"
        )
    x, y = args.position if args.position else (None, None)
    return (Term(layer.name, units[0], args.objective, 1.0, x, y),)


def _spec_layer(args: argparse.Namespace, model: Any) -> Any:
    if args.layer:
        return _resolve_layer(model, args.layer)
    if args.objective in ("logit", "prob"):
        if model.graph.logits is None:
            raise UsageError(
                f"no classifier output was found in {model.name}; name the logits layer with --layer"
            )
        return model.graph.logits
    raise UsageError("--layer is required (see `fvdesk layers` for the names)")


def _spec_units(args: argparse.Namespace, model: Any) -> list[int]:
    if args.objective == "deepdream":
        return []
    layer = _spec_layer(args, model)
    try:
        return args.units.resolve(layer.channels, f"layer {layer.name}")
    except ValueError as e:
        raise UsageError(str(e)) from None


def cmd_render(args: argparse.Namespace) -> int:
    from fvdesk.core.optim.jobs import Job

    if args.from_gallery is not None:
        return cmd_reproduce(args)
    if args.out is None:
        raise UsageError("--out DIR is required (or --from GALLERY)")
    if args.item:
        raise UsageError("--item goes with --from GALLERY")
    unit_render = args.objective in UNIT_KINDS and args.objective != "deepdream"
    if args.images is not None and not unit_render:
        raise UsageError("--images goes with renders of units (not combinations or deepdream)")
    if args.cluster_facets and (args.images is None or (args.diversity or 1) < 2):
        raise UsageError(
            "--cluster-facets needs --images DIR and --diversity N (one facet per cluster)"
        )
    device = _device(args)
    model = _load(args, device=device)
    spec = render_spec(args, model)
    settings = _settings_or_usage(args, device)
    if spec.type == "spectrum":
        from dataclasses import replace

        from fvdesk.core.optim.variants import spectrum_keys

        spec = replace(spec, variants=spectrum_keys(settings))
    job = Job.for_model(model, spec, settings)
    if args.images is not None:
        done = render_with_examples(args, model, job, device)
    else:
        done = write_job(model, job, args.out, device=device, quiet=args.quiet)
    if not args.quiet:
        print(
            f"Rendered {len(done)} image(s) of {job.title} into {args.out} "
            f"(open {args.out / 'index.html'})."
        )
    return EXIT_OK


def write_job(
    model: Any, job: Any, out: Path, *, device: Any, quiet: bool, only: Sequence[int] | None = None
) -> list[Any]:
    """Run ``job`` and commit its images to the gallery in ``out`` batch by batch (what is
    finished survives Ctrl+C); returns the job's results."""
    return write_jobs(model, [job], out, device=device, quiet=quiet, only=only)


def write_jobs(
    model: Any,
    jobs: Sequence[Any],
    out: Path,
    *,
    device: Any,
    quiet: bool,
    only: Sequence[int] | None = None,
    finalize: bool = True,
) -> list[Any]:
    """``write_job`` for several jobs into one gallery (one contact sheet and index at the end;
    none with ``finalize=False``, for a caller that adds to the gallery first)."""
    from fvdesk.core.device import describe_device
    from fvdesk.core.optim.drive import drive
    from fvdesk.core.optim.events import NoticeEvent, StepEvent
    from fvdesk.core.optim.run import run_job
    from fvdesk.core.output.atlas import BatchCommitter
    from fvdesk.core.output.gallery import Gallery, ModelInfo

    dev_text = describe_device(device)
    title = jobs[0].title if len(jobs) == 1 else f"{jobs[0].title} and {len(jobs) - 1} more"
    gallery = Gallery.open(out, ModelInfo.from_model(model), title=title, device=dev_text)
    total = len(only) if only is not None else sum(len(j.spec.slots()) for j in jobs)
    bar = Progress(total, enabled=Progress.wanted(quiet), label=title[-40:])
    committed = 0
    results: list[Any] = []
    for job in jobs:
        committer = BatchCommitter(gallery, device=dev_text)

        def on_event(ev: Any, committer: Any = committer) -> None:
            nonlocal committed
            if committer.offer(ev):
                return
            committed += len(committer.flush())
            bar.update(done=committed)
            if isinstance(ev, StepEvent):
                bar.update(step=ev.step, steps=ev.steps)
            elif isinstance(ev, NoticeEvent) and not quiet:
                bar.message(f"note: {ev.message}")

        try:
            result = drive(run_job(model, job, device=device, only=only), on_event)
            committed += len(committer.flush())
            bar.update(done=committed, force=True)
        except BaseException:  # Ctrl+C: keep the renders that finished
            with contextlib.suppress(Exception):
                committer.flush()
            bar.close()
            raise
        results.extend(result.results)
    bar.close()
    if finalize:
        gallery.finalize(prune=True)
    return results


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``render --from``: render saved items again from their provenance and compare pixels."""
    import numpy as np

    from fvdesk.core.errors import FvdeskError
    from fvdesk.core.optim.drive import drive
    from fvdesk.core.optim.jobs import job_from_provenance
    from fvdesk.core.optim.run import run_job
    from fvdesk.core.output.gallery import read_gallery

    folder = args.from_gallery
    folder = folder.parent if folder.suffix.lower() == ".json" else folder
    _, pairs = read_gallery(folder)
    wanted = args.item if args.item else list(range(len(pairs)))
    bad = [n for n in wanted if n >= len(pairs)]
    if bad:
        raise UsageError(
            f"{folder} has {len(pairs)} items (0-{len(pairs) - 1}); there is no item {bad[0]}"
        )
    reps = {}
    for n in wanted:
        try:
            reps[n] = job_from_provenance(pairs[n][0].provenance, where=f"Item {n} of {folder}")
        except FvdeskError as e:
            raise UsageError(str(e)) from None
    first = reps[wanted[0]].job.model
    if args.model is None and first.path and Path(first.path).is_file():
        args.model = first.path
    device = _device(args)
    model = _load(args, device=device)
    groups: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for n, rep in reps.items():
        if rep.job.model.sha256 != model.sha256:
            raise UsageError(
                f"item {n} of {folder} was rendered from {rep.job.model.file} "
                f"(sha256 {rep.job.model.sha256[:12]}…), not {model.name}; give that model as MODEL"
            )
        key = (json.dumps(rep.job.provenance_key(), sort_keys=True), rep.batch)
        groups.setdefault(key, []).append(n)
    same = 0
    for members in groups.values():
        rep = reps[members[0]]
        if args.out is not None:
            results = write_job(model, rep.job, args.out, device=device, quiet=args.quiet,
                                only=rep.batch)  # fmt: skip
        else:
            results = drive(run_job(model, rep.job, device=device, only=rep.batch)).results
        by_slot = {r.slot: r for r in results}
        for n in members:
            item, saved = pairs[n]
            new = by_slot[reps[n].slot].image
            diff = (
                int(np.abs(new.astype(int) - saved.astype(int)).max())
                if new.shape == saved.shape
                else -1
            )
            same += diff == 0
            verdict = (
                "identical to the saved image"
                if diff == 0
                else f"differs from the saved image (max {diff} levels)"
                if diff > 0
                else f"has another size than the saved image ({new.shape} vs {saved.shape})"
            )
            print(f"item {n} ({item.caption or item.file}): {verdict}")
    if not args.quiet:
        where = f" into {args.out}" if args.out is not None else ""
        print(f"Reproduced {len(wanted)} item(s){where}; {same} identical to the saved pixels.")
    return EXIT_OK


def _settings_or_usage(args: argparse.Namespace, device: Any) -> Any:
    from fvdesk.core.errors import ConfigError

    try:
        return render_settings(args, device=str(device))
    except (TypeError, ValueError, ConfigError) as e:
        raise UsageError(f"bad render settings: {e}") from None


# ------------------------------------------------------------------------------------------------
# atlas
# ------------------------------------------------------------------------------------------------
def cmd_atlas(args: argparse.Namespace) -> int:
    from fvdesk.core.optim.drive import drive
    from fvdesk.core.output import atlas as atl

    if args.merge is not None:
        if args.out is not None and Path(args.out) != Path(args.merge):
            raise UsageError("--merge DIR rebuilds DIR; do not also give a different --out")
        summary = atl.merge_atlas(args.merge)
        if not args.quiet:
            print(
                f"Merged {summary.layers} layer galleries ({summary.units} units) in {args.merge} (open {Path(args.merge) / 'index.html'})."
            )
        return EXIT_OK
    if args.out is None:
        raise UsageError("--out DIR is required (or --merge DIR)")
    try:
        shard = atl.parse_shard(args.shard, env=os.environ) if args.shard else None
    except ValueError as e:
        raise UsageError(str(e)) from None
    local_rank = None  # under torchrun each process takes the GPU of its local rank
    if args.shard == "auto" and shard and os.environ.get("LOCAL_RANK", "").isdigit():
        local_rank = int(os.environ["LOCAL_RANK"])
    device = _device(args, local_rank=local_rank)
    model = _load(args, device=device)
    try:
        plan = atl.plan_atlas(model, layers=args.layers, units_per_layer=args.units_per_layer)
    except atl.LayerSelectionError as e:
        raise UsageError(str(e)) from None
    settings = _settings_or_usage(args, device)
    decorate = atlas_examples(args, model, plan, device) if args.images is not None else None
    runner = atl.Atlas(
        model,
        args.out,
        plan,
        settings,
        objective=args.objective,
        shard=shard,
        force=args.force,
        decorate=decorate,
    )
    try:
        todo = runner.prepare()
    except atl.AtlasSettingsMismatch as e:
        raise UsageError(str(e)) from None
    bar = Progress(todo.total, enabled=Progress.wanted(args.quiet), label="atlas")
    bar.resume(todo.skipped)
    if not args.quiet and todo.skipped:
        bar.message(f"resuming: {todo.skipped} of {todo.total} units already done")
    try:
        summary = drive(runner.run(), _atlas_events(bar, args.quiet))
    except BaseException:
        bar.close()
        if not args.quiet:
            print(
                f"fvdesk: work so far is saved in {args.out}; run the same command again to resume.",
                file=sys.stderr,
            )
        raise
    bar.close()
    if not args.quiet:
        where = f" (shard {shard[0]}/{shard[1]})" if shard else ""
        print(
            f"Atlas{where}: {summary.rendered} rendered, {summary.skipped} already done, "
            f"{summary.layers} layers in {args.out} (open {Path(args.out) / 'index.html'})."
        )
    return EXIT_OK


def _atlas_events(bar: Progress, quiet: bool) -> Callable[[Any], None]:
    """The atlas's events as progress-bar updates (for ``drive``)."""
    from fvdesk.core.optim.events import NoticeEvent, StepEvent
    from fvdesk.core.output import atlas as atl

    handlers: dict[type, Callable[[Any], None]] = {
        StepEvent: lambda ev: bar.update(step=ev.step, steps=ev.steps),
        NoticeEvent: lambda ev: None if quiet else bar.message(f"note: {ev.message}"),
        atl.UnitCommitted: lambda ev: bar.update(
            done=ev.done, label=ev.layer[-30:], force=ev.done == ev.total
        ),
        atl.LayerStarted: lambda ev: bar.update(label=ev.layer[-30:]),
    }

    def on_event(ev: Any) -> None:
        h = handlers.get(type(ev))
        if h is not None:
            h(ev)

    return on_event


# ------------------------------------------------------------------------------------------------
# Dataset examples: `fvdesk examples`, and --images for render and atlas
# ------------------------------------------------------------------------------------------------
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


def _add_examples_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    ex = sub.add_parser(
        "examples",
        parents=[common],
        help="dataset examples of units: the images of a folder that excite them most and least",
        description="Run the images in --images through the model (truncated after --layer) and "
        "keep, per unit, the --top images with the highest and the --bottom with the lowest "
        "activation, with crops of the unit's receptive field. With --out, write them as a "
        "gallery (index.html shows them); without, list them. Results are cached per model, "
        "preprocessing and folder: a second run, or one after adding a few images, is quick.",
    )
    _add_images_flags(ex)
    ex.add_argument(
        "--layer", "-l", metavar="LAYER", help="layer name as `fvdesk layers` prints it"
    )
    ex.add_argument("--units", "-u", type=_unit_spec, default=UnitSpec("all"), metavar="SPEC",
                    help="all, 7, 0-63 or 3,7,9 (default: all)")  # fmt: skip
    ex.add_argument("--objective", choices=("channel", "neuron"), default="channel",
                    help="rank by the channel's spatial max (default) or the neuron at --position")  # fmt: skip
    ex.add_argument("--position", type=_position, metavar="X,Y",
                    help="the neuron's grid position (default: the centre)")  # fmt: skip
    ex.add_argument("--batch", type=_positive, default=32, metavar="N",
                    help="images per forward pass (default: 32)")  # fmt: skip
    ex.add_argument("--out", type=Path, metavar="DIR", help="write a gallery of the examples")
    ex.add_argument("--cache", action="store_true",
                    help="print where the examples cache is and its size")  # fmt: skip
    ex.add_argument("--clear-cache", action="store_true",
                    help="delete the examples cache (only MODEL's when MODEL is given)")  # fmt: skip
    ex.set_defaults(func=cmd_examples)


def examples_pass(args: argparse.Namespace, model: Any, layers: Sequence[str], device: Any, *,
                  kind: str = "channel", position: tuple[int, int] | None = None,
                  top: int | None = None) -> Any:  # fmt: skip
    """Run the dataset pass for ``layers`` with a progress bar; returns its ``ExamplesResult``."""
    from fvdesk.core.errors import FvdeskError
    from fvdesk.core.optim.drive import drive
    from fvdesk.core.optim.events import NoticeEvent, ProgressEvent
    from fvdesk.core.optim.jobs import ExamplesJob, Job
    from fvdesk.core.optim.run import run_job

    try:
        spec = ExamplesJob(
            str(args.images), tuple(layers), kind=kind,
            x=position[0] if position else None, y=position[1] if position else None,
            top=args.top if top is None else top, bottom=args.bottom,
            batch=getattr(args, "batch", 32), engine=args.engine,
        )  # fmt: skip
        spec.validate(model.graph)
    except FvdeskError as e:
        raise UsageError(str(e)) from None
    bar = Progress(0, enabled=Progress.wanted(args.quiet), label="examples")

    def on_event(ev: Any) -> None:
        if isinstance(ev, ProgressEvent):
            bar.total = ev.total
            bar.update(done=ev.done, force=ev.done == ev.total)
        elif isinstance(ev, NoticeEvent) and not args.quiet:
            bar.message(f"note: {ev.message}")

    try:
        result = drive(run_job(model, Job.for_model(model, spec), device=device), on_event)
    finally:
        bar.close()
    if not args.quiet:
        cached = result.images - result.computed
        where = f"; {cached:,} from the cache" if cached > 0 else ""
        print(f"Dataset {args.images}: {result.images:,} images{where} ({result.engine or 'cache'}).",
              file=sys.stderr)  # fmt: skip
    return result


def _examples_lookup(result: Any, args: argparse.Namespace,
                     clusters: dict[int, Any] | None = None) -> Callable[[Any], Any]:  # fmt: skip
    from fvdesk.core.dataset.export import ItemExamples

    def lookup(item: Any) -> Any:
        layer = result.layers.get(item.layer)
        if layer is None or not 0 <= item.unit < layer.units:
            return None
        ux = layer.unit(item.unit, top=args.top, bottom=args.bottom)
        members = (clusters or {}).get(item.unit)
        if item.objective == "cluster" and members is not None and item.facet < len(members):
            return ItemExamples(ux, members[item.facet][: args.top])
        return ItemExamples(ux)

    return lookup


def _pre_record(model: Any) -> dict[str, Any]:
    return {k: v for k, v in model.preprocessing.to_dict().items() if k != "source"}


def render_with_examples(args: argparse.Namespace, model: Any, job: Any, device: Any) -> list[Any]:
    """``render --images``: the pass for the rendered layer, the renders (one facet per dataset
    cluster with ``--cluster-facets``), then every item gets its examples."""
    from fvdesk.core.dataset.clusters import DEFAULT_POOL, cluster_facets
    from fvdesk.core.dataset.export import attach_examples
    from fvdesk.core.optim.jobs import Job, UnitJob
    from fvdesk.core.output.gallery import Gallery

    spec = job.spec
    if not isinstance(spec, UnitJob) or spec.kind == "deepdream":
        raise UsageError("--images goes with renders of units (not combinations or deepdream)")
    kind = "neuron" if spec.kind == "neuron" else "channel"
    position = (spec.x, spec.y) if kind == "neuron" and spec.x is not None else None
    pool = max(args.top, DEFAULT_POOL) if args.cluster_facets else None
    result = examples_pass(
        args, model, [spec.layer], device, kind=kind, position=position, top=pool
    )
    jobs, clusters = [job], None
    if args.cluster_facets:
        if kind == "neuron":
            raise UsageError("--cluster-facets goes with channel and class objectives")
        clusters, jobs = {}, []
        for u in spec.units:
            cl = cluster_facets(model, result.layers[spec.layer], u, spec.facets,
                                pre=job.preprocessing, seed=job.settings.seed)  # fmt: skip
            clusters[u] = cl.members
            jobs.append(Job(cl.job, job.settings, job.preprocessing, job.model, job.labels))
    done = write_jobs(model, jobs, args.out, device=device, quiet=args.quiet, finalize=False)
    g = Gallery.open(args.out, model)
    attach_examples(g, _examples_lookup(result, args, clusters), preprocessing=_pre_record(model))
    g.finalize(prune=True)
    return done


def atlas_examples(args: argparse.Namespace, model: Any, plan: Sequence[Any],
                   device: Any) -> Callable[[Any, Any], None]:  # fmt: skip
    """``atlas --images``: one pass for every planned layer now; the returned hook gives each
    layer gallery's units their examples as the atlas finishes it (resumed ones too)."""
    from fvdesk.core.dataset.export import Crops, attach_examples

    kind = "neuron" if args.objective == "neuron" else "channel"
    result = examples_pass(args, model, [x.name for x in plan], device, kind=kind)
    lookup = _examples_lookup(result, args)
    pre = _pre_record(model)
    crops = Crops()

    def decorate(gallery: Any, _layer: Any) -> None:
        attach_examples(gallery, lookup, preprocessing=pre, crops=crops)

    return decorate


def cmd_examples(args: argparse.Namespace) -> int:
    from fvdesk.core.dataset.cache import cache_root, cache_size, clear_cache, format_bytes

    if args.cache or args.clear_cache:
        sha = None
        if args.model:
            from fvdesk.core.output.gallery import ModelInfo

            sha = ModelInfo.from_file(args.model).sha256
        if args.clear_cache:
            freed = clear_cache(sha)
            print(f"Cleared {format_bytes(freed)} of dataset examples from {cache_root()}.")
        else:
            what = f" for {Path(args.model).name}" if sha else ""
            print(f"Examples cache{what}: {format_bytes(cache_size(sha))} in {cache_root()}.")
        return EXIT_OK
    if args.images is None or args.layer is None:
        raise UsageError("--images DIR and --layer LAYER are required (or --cache / --clear-cache)")
    device = _device(args)
    model = _load(args, device=device)
    layer = _resolve_layer(model, args.layer)
    try:
        units = args.units.resolve(layer.channels, f"layer {layer.name}")
    except ValueError as e:
        raise UsageError(str(e)) from None
    result = examples_pass(args, model, [layer.name], device, kind=args.objective,
                           position=args.position)  # fmt: skip
    le = result.layers[layer.name]
    if args.out is None:
        for u in units:
            ux = le.unit(u)
            name = model.graph.unit_label(layer.name, u, model.labels)
            head = f"{layer.name}:{u}" + (f" {name}" if name else "")
            tops = ", ".join(f"{ex.rel} ({ex.value:.3g})" for ex in ux.top[:3])
            print(f"{head}: {tops}" + (" …" if len(ux.top) > 3 else ""))
        return EXIT_OK
    from fvdesk.core.dataset.export import write_examples_gallery
    from fvdesk.core.device import describe_device
    from fvdesk.core.output.gallery import ModelInfo

    write_examples_gallery(
        args.out, ModelInfo.from_model(model), le, units,
        labels=lambda u: model.graph.unit_label(layer.name, u, model.labels),
        top=args.top, bottom=args.bottom, preprocessing=_pre_record(model),
        device=describe_device(device),
    )  # fmt: skip
    if not args.quiet:
        print(f"Wrote the examples of {len(units)} unit(s) of {layer.name} into {args.out} "
              f"(open {args.out / 'index.html'}).")  # fmt: skip
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
