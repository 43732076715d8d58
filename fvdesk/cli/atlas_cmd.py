"""``fvdesk atlas``: every unit of many layers, resumable and shardable."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fvdesk.cli.args import EXIT_OK, UsageError, shard_and_rank
from fvdesk.cli.common import _device, _load, _settings_or_usage
from fvdesk.cli.examples_cmd import atlas_examples
from fvdesk.cli.terminal import Progress


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
    shard, local_rank = shard_and_rank(args.shard)  # under torchrun: the local rank's GPU
    device = _device(args, local_rank=local_rank)
    model = _load(args, device=device)
    try:
        plan = atl.plan_atlas(model, layers=args.layers, units_per_layer=args.units_per_layer)
    except atl.LayerSelectionError as e:
        raise UsageError(str(e)) from None
    settings = _settings_or_usage(args, device, model)
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
