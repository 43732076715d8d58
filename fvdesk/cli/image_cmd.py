"""``fvdesk image``: what the model sees in one image, written as one gallery.

The views are the core's image jobs (``fvdesk.core.inspect``): the layer's top units (their heat
maps over the image and their renders), attribution, neuron groups, the activation grid,
inversion, caricature and accentuation.  Every item keeps its provenance (the image's sha256
among it) and the image is copied into the gallery, so ``fvdesk render --from DIR`` reproduces
every item; ``inspection.json`` lists what was found.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fvdesk.cli.args import EXIT_OK, UnitSpec, UsageError, _nonneg, _positive, _unit_spec
from fvdesk.cli.common import _device, _load, _resolve_layer, _settings_or_usage
from fvdesk.cli.writing import write_jobs

_HELP = "inspect one image: prediction, top units, attribution, neuron groups, ..."
_DESCRIPTION = (
    "What the model sees in IMAGE (prepared as a dataset pass prepares images): "
    "the prediction, the --top units of --layer with heat maps over the image and their "
    "renders, and the views asked for below, written as one gallery (heat maps as PNGs beside "
    "the renders; index.html shows them; inspection.json lists the numbers). "
    "`fvdesk render --from DIR` reproduces every item."
)
#: The command's own flags: (names, argparse keywords).
_FLAGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("image",), {"type": Path, "metavar": "IMAGE", "help": "the image file"}),
    (("--layer", "-l"), {"required": True, "metavar": "LAYER",
                         "help": "the layer to inspect, as `fvdesk layers` prints it"}),
    (("--top",), {"type": _nonneg, "default": 9, "metavar": "K",
                  "help": "the K units with the largest activation on the image (default: 9)"}),
    (("--no-renders",), {"action": "store_true",
                         "help": "heat maps only: do not render the top and attributed units"}),
    (("--attribute",), {"metavar": "CLASS|L:U",
                        "help": "attribute 'top' (the predicted class), a class index or a unit "
                        "L:U of a later layer to --to-layer (spatial map and channel ranking)"}),
    (("--to-layer",), {"metavar": "L2", "help": "the earlier layer attributed to (default: --layer)"}),
    (("--ig-steps",), {"type": _positive, "metavar": "N",
                       "help": "integrated gradients over N steps instead of activation x gradient"}),
    (("--groups",), {"type": _positive, "metavar": "K",
                     "help": "factor the layer's activations into K neuron groups (NMF): maps and renders"}),
    (("--grid",), {"action": "store_true",
                   "help": "the activation grid: every grid cell's activation vector rendered"}),
    (("--grid-threshold",), {"type": float, "default": 0.1, "metavar": "F",
                             "help": "cells whose vector norm is below F x the largest stay blank (default: 0.1)"}),
    (("--invert",), {"action": "store_true",
                     "help": "feature inversion: an image with the layer's activations on IMAGE"}),
    (("--caricature",), {"action": "store_true",
                         "help": "caricature: the layer's activations on IMAGE exaggerated"}),
    (("--accentuate",), {"type": _unit_spec, "metavar": "U",
                         "help": "render units U of --layer starting from IMAGE, kept close to it"}),
    (("--near-layer",), {"metavar": "L0",
                         "help": "with --accentuate: keep close in L0's activations (default: in pixels)"}),
    (("--near-weight",), {"type": float, "default": 1.0, "metavar": "W",
                          "help": "with --accentuate: weight of staying close (default: 1)"}),
    (("--reuse",), {"type": Path, "action": "append", "metavar": "GALLERY",
                    "help": "reuse unit renders of a gallery or atlas whose provenance matches (repeatable)"}),
    (("--out",), {"type": Path, "required": True, "metavar": "DIR", "help": "gallery folder"}),
)  # fmt: skip


def _add_image_parser(sub: Any, common: argparse.ArgumentParser,
                      opt: argparse.ArgumentParser) -> None:  # fmt: skip
    im = sub.add_parser("image", parents=[common, opt], help=_HELP, description=_DESCRIPTION)
    for flags, kw in _FLAGS:
        im.add_argument(*flags, **kw)
    im.set_defaults(func=cmd_image)


def _scores(pairs: Any) -> list[dict[str, Any]]:
    return [{"unit": int(u), "value": round(float(v), 6)} for u, v in pairs]


def cmd_image(args: argparse.Namespace) -> int:
    from fvdesk.core.errors import FvdeskError
    from fvdesk.core.inspect import analysis as an
    from fvdesk.core.inspect import (
        runners,  # noqa: F401 - registers the image jobs' runners
        specs,
    )
    from fvdesk.core.inspect.image import open_image
    from fvdesk.core.jobs.job import Job, UnitJob, default_kind

    device = _device(args)
    model = _load(args, device=device)
    img = open_image(args.image, model)
    layer = _resolve_layer(model, args.layer).name
    to_layer = _resolve_layer(model, args.to_layer).name if args.to_layer else layer
    settings = _settings_or_usage(args, device, model)
    pre, labels = model.preprocessing, model.labels
    report: dict[str, Any] = {"image": {"path": str(img.path), "sha256": img.sha256,
                                        "size": list(img.source_size)},
                              "model": an.model_summary(model), "layer": layer}  # fmt: skip
    jobs: list[Any] = []
    render_units: dict[str, list[int]] = {}

    def add(spec: Any) -> None:
        try:
            spec.validate(model.graph)
        except FvdeskError as e:
            raise UsageError(str(e)) from None
        jobs.append(Job.for_model(model, spec, settings))

    pred = an.predict(model, img, pre=pre, labels=labels)
    if pred is not None:
        report["prediction"] = [vars(c) for c in pred.classes]
    acts = an.layer_activations(model, img, layer, pre=pre, labels=labels)
    top = acts.top(args.top)
    report["top_units"] = [{"unit": t.unit, "value": t.value, "label": t.label} for t in top]
    add(specs.ImageJob.of(img, layer, top=args.top))
    render_units.setdefault(layer, []).extend(t.unit for t in top)
    if args.attribute:
        method = "integrated" if args.ig_steps else "gradient"
        spec = specs.AttributionJob.of(img, to_layer, target=args.attribute, method=method,
                                       steps=args.ig_steps or 32)  # fmt: skip
        add(spec)
        att = an.attribute(
            model, img, spec.target, to_layer, method=method, steps=spec.steps, pre=pre
        )
        report["attribution"] = {"target": att.target, "to_layer": to_layer, "method": method,
                                 "value": att.value, "channels": _scores(att.top(args.top))}  # fmt: skip
        render_units.setdefault(to_layer, []).extend(u for u, _ in att.top(args.top))
    if args.groups:
        add(specs.GroupsJob.of(img, layer, groups=args.groups))
        g = an.neuron_groups(model, img, layer, args.groups, pre=pre)
        report["groups"] = {"k": g.k, "relative_error": g.error}
    if args.grid:
        try:
            grid_spec = specs.GridJob.of(img, layer, model.graph, threshold=args.grid_threshold)
        except FvdeskError as e:
            raise UsageError(str(e)) from None
        add(grid_spec)
    if args.invert:
        add(specs.InversionJob.of(img, layer))
    if args.caricature:
        add(specs.InversionJob.of(img, layer, caricature=True))
    if args.accentuate is not None:
        units = _units(args.accentuate, model.graph[layer])
        near = _resolve_layer(model, args.near_layer).name if args.near_layer else None
        add(specs.AccentuateJob.of(img, layer, units, penalty_layer=near, weight=args.near_weight))
    if not args.no_renders:
        for name, units in render_units.items():
            unit_spec = UnitJob(
                name, tuple(dict.fromkeys(units)), kind=default_kind(model.graph[name])
            )
            if unit_spec.units:
                add(unit_spec)
    return _write_inspection(args, model, img, jobs, report, device)


def _write_inspection(
    args: argparse.Namespace,
    model: Any,
    img: Any,
    jobs: list[Any],
    report: dict[str, Any],
    device: Any,
) -> int:
    """The jobs run into the gallery and the report lands beside them, so the gallery's
    index and ``inspection.json`` describe the same run."""
    from fvdesk.core.fileio import atomic_write_text
    from fvdesk.core.inspect.image import copy_into
    from fvdesk.core.output.gallery import Gallery, ModelInfo

    jobs = _reused(args, model, jobs, device)
    if jobs:
        write_jobs(model, jobs, args.out, device=device, quiet=args.quiet, finalize=False)
    copy_into(args.out, img)
    atomic_write_text(args.out / "inspection.json", json.dumps(report, indent=1) + "\n")
    Gallery.open(args.out, ModelInfo.from_model(model)).finalize(prune=True)
    if not args.quiet:
        _print_report(report)
        print(f"Inspected {img.name} into {args.out} (open {args.out / 'index.html'}).")
    return EXIT_OK


def _units(spec: UnitSpec, layer: Any) -> list[int]:
    try:
        return spec.resolve(layer.channels, f"layer {layer.name}")
    except ValueError as e:
        raise UsageError(str(e)) from None


def _reused(args: argparse.Namespace, model: Any, jobs: list[Any], device: Any) -> list[Any]:
    """``jobs`` without the unit renders found in ``--reuse`` galleries (those are copied into
    the output gallery with their own provenance)."""
    if not args.reuse:
        return jobs
    from fvdesk.core.device import describe_device
    from fvdesk.core.inspect.cache import RenderCache
    from fvdesk.core.jobs.job import UnitJob
    from fvdesk.core.output.gallery import Gallery, GalleryItem, ModelInfo

    cache = RenderCache()
    for folder in args.reuse:
        cache.add_gallery(folder)
    gallery = Gallery.open(args.out, ModelInfo.from_model(model), device=describe_device(device))
    left = []
    for job in jobs:
        if not isinstance(job.spec, UnitJob):
            left.append(job)
            continue
        hits = [r for u in job.spec.units if (r := cache.get(job, u)) is not None]
        gallery.add_many([(GalleryItem.from_result(r), r.image) for r in hits])
        rest = cache.missing(job)
        if rest is not None:
            left.append(rest)
        if hits and not args.quiet:
            print(f"reused {len(hits)} render(s) of {job.spec.layer} from --reuse")
    return left


def _print_report(report: dict[str, Any]) -> None:
    for c in report.get("prediction", []):
        name = f" {c['label']}" if c["label"] else ""
        print(f"class {c['index']}{name}: p={c['probability']:.3f} (logit {c['logit']:.3f})")
    units = ", ".join(f"{t['unit']} ({t['value']:.3g})" for t in report["top_units"])
    print(f"top units of {report['layer']}: {units}")
    if "attribution" in report:
        a = report["attribution"]
        ch = ", ".join(f"{c['unit']} ({c['value']:.3g})" for c in a["channels"])
        print(f"attribution of {a['target']} to {a['to_layer']} ({a['method']}): {ch}")
    if "groups" in report:
        g = report["groups"]
        print(f"{g['k']} neuron groups reconstruct {report['layer']} within "
              f"{100 * g['relative_error']:.1f}% (relative Frobenius error)")  # fmt: skip
