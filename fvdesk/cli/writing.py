"""Running jobs into gallery folders, batch by batch, with a progress bar (render, examples)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fvdesk.cli.terminal import Progress


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
    from fvdesk.core.jobs.run import run_job
    from fvdesk.core.optim.drive import drive
    from fvdesk.core.optim.events import NoticeEvent, StepEvent
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
