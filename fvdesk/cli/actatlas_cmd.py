"""``fvdesk activation-atlas``: a layer's activation atlas over a folder of images (resumable)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fvdesk.cli.args import EXIT_OK, UsageError, _nonneg, _positive
from fvdesk.cli.common import _device, _load, _settings_or_usage
from fvdesk.cli.terminal import Progress


def add_parser(sub: Any, common: argparse.ArgumentParser, opt: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "activation-atlas",
        parents=[common, opt],
        help="a layer's activation atlas over a folder of images (Carter et al. 2019)",
        description="Collect the layer's activation vectors at --per-image sampled positions of "
        "every image in --images, lay them out in 2-D with UMAP, lay a --grid N x N over the map "
        "and render each cell's mean vector as a direction, beside the dataset crops it came "
        "from. Writes PNG tiles, DIR/atlas.png, DIR/actatlas.json (provenance) and "
        "DIR/index.html. Cells are committed as they finish: the same command again resumes; "
        "--from DIR rebuilds a recorded atlas exactly.",
    )
    p.add_argument("--images", type=Path, metavar="DIR", help="a folder of your images (recursive)")
    p.add_argument("--layer", "-l", metavar="LAYER", help="a feature-map layer (`fvdesk layers`)")
    p.add_argument("--out", type=Path, metavar="DIR", help="the atlas folder")
    p.add_argument("--from", dest="source", type=Path, metavar="ATLAS",
                   help="rebuild the atlas recorded in ATLAS (a folder or its actatlas.json) into "
                   "--out with the recorded options (MODEL defaults to the recorded path)")  # fmt: skip
    p.add_argument(
        "--grid", type=_positive, default=20, metavar="N", help="N x N cells (default 20)"
    )
    p.add_argument("--per-image", type=_positive, default=8, metavar="K",
                   help="positions sampled per image (default 8)")  # fmt: skip
    p.add_argument("--min-count", type=_positive, default=3, metavar="N",
                   help="vectors a cell needs to be rendered (default 3)")  # fmt: skip
    p.add_argument("--crops", type=_nonneg, default=6, metavar="N",
                   help="dataset crops per cell (default 6)")  # fmt: skip
    p.add_argument("--max-vectors", type=_nonneg, default=0, metavar="N",
                   help="keep at most N vectors in memory (default: 256 MB of them)")  # fmt: skip
    p.add_argument("--sample-seed", type=int, default=0, metavar="S",
                   help="seed of the sampled positions and of UMAP (default 0)")  # fmt: skip
    p.add_argument("--no-classes", action="store_true",
                   help="do not attribute the logits to the cells (the class atlas)")  # fmt: skip
    p.set_defaults(func=cmd_activation_atlas)


def _job(args: argparse.Namespace, model: Any, device: Any) -> Any:
    from fvdesk.core.actatlas.build import job_from_manifest
    from fvdesk.core.actatlas.spec import ActivationAtlasJob
    from fvdesk.core.errors import FvdeskError
    from fvdesk.core.jobs.job import Job
    from fvdesk.core.output.actatlas import read_manifest

    try:
        if args.source is not None:
            images = str(args.images) if args.images is not None else None
            return job_from_manifest(read_manifest(args.source), out=str(args.out), root=images)
        spec = ActivationAtlasJob(str(args.images), args.layer, str(args.out), grid=args.grid,
                                  per_image=args.per_image, min_count=args.min_count,
                                  seed=args.sample_seed, max_vectors=args.max_vectors,
                                  crops=args.crops, classes=not args.no_classes)  # fmt: skip
        spec.validate(model.graph)
    except FvdeskError as e:
        raise UsageError(str(e)) from None
    return Job.for_model(model, spec, _settings_or_usage(args, device, model))


def cmd_activation_atlas(args: argparse.Namespace) -> int:
    from fvdesk.core.actatlas import build  # registers the runner
    from fvdesk.core.jobs.run import run_job
    from fvdesk.core.optim.drive import drive
    from fvdesk.core.optim.events import NoticeEvent, ProgressEvent, StepEvent
    from fvdesk.core.output import actatlas as out_mod

    if args.out is None:
        raise UsageError("--out DIR is required")
    if args.source is None and (args.images is None or args.layer is None):
        raise UsageError("--images DIR and --layer LAYER are required (or --from ATLAS)")
    if args.source is not None and args.model is None:
        from fvdesk.core.errors import FvdeskError

        try:
            recorded = out_mod.read_manifest(args.source)["model"].get("path", "")
        except FvdeskError as e:
            raise UsageError(str(e)) from None
        if recorded and Path(recorded).is_file():
            args.model = recorded
    device = _device(args)
    model = _load(args, device=device)
    job = _job(args, model, device)
    bar = Progress(0, enabled=Progress.wanted(args.quiet), label="images")

    def on_event(ev: Any) -> None:
        if isinstance(ev, ProgressEvent):
            bar.total = ev.total
            bar.update(done=ev.done, force=ev.done == ev.total)
        elif isinstance(ev, out_mod.AtlasLaidOut):
            bar.total, bar.label = ev.cells, "cells"
            bar.resume(ev.done)
            if ev.done and not args.quiet:
                bar.message(f"resuming: {ev.done} of {ev.cells} cells already rendered")
        elif isinstance(ev, out_mod.CellRendered):
            bar.update(done=ev.done, force=ev.done == ev.total)
        elif isinstance(ev, StepEvent):
            bar.update(step=ev.step, steps=ev.steps)
        elif isinstance(ev, NoticeEvent) and not args.quiet:
            bar.message(ev.message)

    try:
        result = drive(run_job(model, job, device=device), on_event)
    except BaseException:
        bar.close()
        if not args.quiet:
            print(f"fvdesk: work so far is saved in {args.out}; run the same command again to "
                  "resume.", file=sys.stderr)  # fmt: skip
        raise
    bar.close()
    assert isinstance(result, build.ActivationAtlasResult)
    if not args.quiet:
        print(f"Activation atlas of {job.spec.layer}: {result.cells} cells, {result.rendered} "
              f"rendered, {result.skipped} already done, in {args.out} "
              f"(open {Path(args.out) / out_mod.INDEX}).")  # fmt: skip
    return EXIT_OK
