"""The ``fvdesk`` command line: one parser for every command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fvdesk.cli.actatlas_cmd import add_parser as _add_actatlas_parser
from fvdesk.cli.args import (
    UnitSpec,
    _add_article_flags,
    _add_images_flags,
    _add_setting_flags,
    _input_size,
    _nonneg,
    _position,
    _positive,
    _preset,
    _shard_arg,
    _unit_spec,
)
from fvdesk.cli.atlas_cmd import cmd_atlas
from fvdesk.cli.examples_cmd import _add_examples_parser
from fvdesk.cli.image_cmd import _add_image_parser
from fvdesk.cli.model_cmds import cmd_info, cmd_layers
from fvdesk.cli.render_cmds import cmd_render
from fvdesk.core.jobs.job import UNIT_KINDS


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

    common = _common_flags()
    _add_layers_parser(sub, common)
    _add_info_parser(sub, common)
    opt = argparse.ArgumentParser(add_help=False)
    _add_setting_flags(opt)

    _add_render_parser(sub, common, opt)
    _add_atlas_parser(sub, common, opt)
    _add_examples_parser(sub, common)
    _add_image_parser(sub, common, opt)
    _add_actatlas_parser(sub, common, opt)
    return p


def _common_flags() -> argparse.ArgumentParser:
    """The flags every model command takes: the model, device, input and the user's choices."""
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
        "--input-size",
        type=_input_size,
        metavar="HxW",
        help="the input size of a size-agnostic model that only runs at its own size "
        "(e.g. 48x320; default: the size its metadata records, else 224)",
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
        help="also save --preprocess/--labels/--input/--input-size in the sidecar MODEL.fvdesk.json "
        "next to the model, so the app and later runs use them (your choice wins over the "
        "model's metadata)",
    )
    common.add_argument(
        "--no-parity",
        action="store_true",
        help="skip the torch-vs-onnxruntime parity check while loading",
    )
    common.add_argument("--quiet", "-q", action="store_true", help="no progress bar or notices")
    common.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return common


def _add_layers_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """fvdesk layers"""
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


def _add_info_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """fvdesk info"""
    inf = sub.add_parser(
        "info",
        parents=[common],
        help="input, preprocessing, labels, parity, device",
        description="What fvdesk found out about a model: input spec, preprocessing in force, labels, parity with onnxruntime, device.",
    )
    inf.add_argument("--json", action="store_true", help="print JSON")
    inf.set_defaults(func=cmd_info)


def _add_render_parser(
    sub: Any, common: argparse.ArgumentParser, opt: argparse.ArgumentParser
) -> None:
    """fvdesk render: units, combinations, the article's jobs, --from reproduction"""
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


def _add_atlas_parser(
    sub: Any, common: argparse.ArgumentParser, opt: argparse.ArgumentParser
) -> None:
    """fvdesk atlas: every unit of many layers, resumable and shardable"""
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
