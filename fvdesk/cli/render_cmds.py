"""``fvdesk render``: units, combinations, the article's figures, and ``--from`` reproduction."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fvdesk.cli.args import EXIT_OK, UsageError
from fvdesk.cli.common import _device, _load, _resolve_layer, _settings_or_usage
from fvdesk.cli.examples_cmd import render_with_examples
from fvdesk.cli.writing import write_job
from fvdesk.core.jobs.job import UNIT_KINDS


def _layer_kind(model: Any) -> Callable[[str], str]:
    from fvdesk.core.jobs.job import default_kind

    return lambda name: default_kind(model.graph[name]) if name in model.graph else "channel"


def render_spec(args: argparse.Namespace, model: Any) -> Any:
    """The job spec the render flags describe (a combination when --objective is an expression)."""
    from fvdesk.core.errors import FvdeskError
    from fvdesk.core.jobs.job import CombinationJob, UnitJob, parse_objective

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
    from fvdesk.core.jobs import job as jobs

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
    from fvdesk.core.jobs.job import parse_objective

    terms = parse_objective(text, _layer_kind(model))
    for t in terms:
        _resolve_layer(model, t.layer)
    return terms


def _target_terms(args: argparse.Namespace, model: Any) -> Any:
    """One objective for --spectrum/--steepest: --objective EXPR, or one unit of --layer."""
    from fvdesk.core.jobs.job import Term

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
    from fvdesk.core.jobs.job import Job

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
    settings = _settings_or_usage(args, device, model)
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


def _image_jobs(folder: Path) -> None:
    """Image views reproduce too: their runners registered, their image also looked for in the
    gallery's copy (``fvdesk.core.inspect``)."""
    from fvdesk.core.inspect import runners  # noqa: F401
    from fvdesk.core.inspect.image import search_in

    search_in(folder)


def cmd_reproduce(args: argparse.Namespace) -> int:
    """``render --from``: render saved items again from their provenance and compare pixels."""
    import numpy as np

    from fvdesk.core.errors import FvdeskError
    from fvdesk.core.jobs.job import job_from_provenance
    from fvdesk.core.jobs.run import run_job
    from fvdesk.core.optim.drive import drive
    from fvdesk.core.output.gallery import read_gallery

    folder = args.from_gallery
    folder = folder.parent if folder.suffix.lower() == ".json" else folder
    _image_jobs(folder)
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
