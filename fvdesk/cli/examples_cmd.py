"""``fvdesk examples`` and ``--images``: dataset examples beside renders."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fvdesk.cli.args import (
    EXIT_OK,
    UnitSpec,
    UsageError,
    _add_images_flags,
    _position,
    _positive,
    _shard_arg,
    _unit_spec,
    shard_and_rank,
)
from fvdesk.cli.common import _device, _load, _resolve_layer
from fvdesk.cli.terminal import Progress
from fvdesk.cli.writing import write_jobs


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
    ex.add_argument("--decode-workers", type=int, metavar="N",
                    help="decode the images in N processes beside the model (default 0: one "
                    "thread per core, as fast on 2 cores)")  # fmt: skip
    ex.add_argument("--shard", type=_shard_arg, metavar="I/N",
                    help="compute only every N-th image from I into the cache (no summary); "
                    "'auto' reads RANK/WORLD_SIZE (torchrun) or SLURM_ARRAY_TASK_ID/COUNT; "
                    "share the cache between shards with FVDESK_CACHE_DIR")  # fmt: skip
    ex.add_argument("--merge", action="store_true",
                    help="summarize what the shards computed (every image must be in the cache)")  # fmt: skip
    ex.add_argument("--out", type=Path, metavar="DIR", help="write a gallery of the examples")
    ex.add_argument("--cache", action="store_true",
                    help="print where the examples cache is and its size")  # fmt: skip
    ex.add_argument("--clear-cache", action="store_true",
                    help="delete the examples cache (only MODEL's when MODEL is given)")  # fmt: skip
    ex.set_defaults(func=cmd_examples)


def examples_pass(args: argparse.Namespace, model: Any, layers: Sequence[str], device: Any, *,
                  kind: str = "channel", position: tuple[int, int] | None = None,
                  top: int | None = None, batch: int | None = None,
                  options: Any = None) -> Any:  # fmt: skip
    """Run the dataset pass for ``layers`` with a progress bar; returns its ``ExamplesResult``.

    ``batch`` is ``examples --batch``; ``render`` and ``atlas`` have a ``--batch`` of their own
    (images optimized together, ``None`` when not given), which is not the pass's.  ``options``:
    ``passes.PassOptions`` (decode workers, a shard, merging)."""
    from fvdesk.core.errors import FvdeskError
    from fvdesk.core.jobs.job import ExamplesJob, Job
    from fvdesk.core.jobs.passes import PassOptions, run_examples
    from fvdesk.core.optim.drive import drive
    from fvdesk.core.optim.events import NoticeEvent, ProgressEvent

    try:
        spec = ExamplesJob(
            str(args.images), tuple(layers), kind=kind,
            x=position[0] if position else None, y=position[1] if position else None,
            top=args.top if top is None else top, bottom=args.bottom,
            engine=args.engine, **({} if batch is None else {"batch": batch}),
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
        job = Job.for_model(model, spec)  # run_examples is run_job's runner of ExamplesJob
        result = drive(run_examples(model, job, lambda: False, None, device,
                                    options=options or PassOptions()), on_event)  # fmt: skip
    finally:
        bar.close()
    if not args.quiet and result.layers:
        cached = result.images - result.computed
        where = f"; {cached:,} from the cache" if cached > 0 else ""
        print(f"Dataset {args.images}: {result.images:,} images{where} ({result.engine or 'cache'}).",
              file=sys.stderr)  # fmt: skip
    return result


def _examples_lookup(result: Any, args: argparse.Namespace,
                     clusters: dict[int, Any] | None = None) -> Callable[[Any], Any]:  # fmt: skip
    from fvdesk.core.output.examples import ItemExamples

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
    from fvdesk.core.jobs.clusters import DEFAULT_POOL, cluster_facets
    from fvdesk.core.jobs.job import Job, UnitJob
    from fvdesk.core.output.examples import attach_examples
    from fvdesk.core.output.gallery import Gallery

    spec = job.spec
    if not isinstance(spec, UnitJob) or spec.kind == "deepdream":
        raise UsageError("--images goes with renders of units (not combinations or deepdream)")
    kind = "neuron" if spec.kind == "neuron" else "channel"
    position: tuple[int, int] | None = None
    if kind == "neuron" and spec.x is not None:
        position = (spec.x, spec.y)  # type: ignore[assignment]  # a neuron spec sets x and y together
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
    from fvdesk.core.output.examples import Crops, attach_examples

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
    from fvdesk.core.jobs.passes import PassOptions

    if args.shard and args.merge:
        raise UsageError("--merge summarizes after every --shard has run; give one or the other")
    shard, local_rank = shard_and_rank(args.shard)
    device = _device(args, local_rank=local_rank)
    model = _load(args, device=device)
    layer = _resolve_layer(model, args.layer)
    try:
        units = args.units.resolve(layer.channels, f"layer {layer.name}")
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.decode_workers is not None and args.decode_workers < 0:
        raise UsageError("--decode-workers must be 0 or more")
    options = PassOptions(workers=args.decode_workers, shard=shard, compute=not args.merge)
    result = examples_pass(args, model, [layer.name], device, kind=args.objective,
                           position=args.position, batch=args.batch, options=options)  # fmt: skip
    if shard is not None:
        if not args.quiet:
            print(f"Shard {shard[0]}/{shard[1]}: {result.computed:,} images computed into the "
                  f"cache{' (cancelled)' if result.cancelled else ''}; run --merge after every "
                  "shard has finished.")  # fmt: skip
        return EXIT_OK
    le = result.layers[layer.name]
    if args.out is None:
        for u in units:
            ux = le.unit(u)
            name = model.graph.unit_label(layer.name, u, model.labels)
            head = f"{layer.name}:{u}" + (f" {name}" if name else "")
            tops = ", ".join(f"{ex.rel} ({ex.value:.3g})" for ex in ux.top[:3])
            print(f"{head}: {tops}" + (" …" if len(ux.top) > 3 else ""))
        return EXIT_OK
    from fvdesk.core.device import describe_device
    from fvdesk.core.output.examples import write_examples_gallery
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
