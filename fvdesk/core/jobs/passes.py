"""The activation pass: a job (``ExamplesJob``) that front ends drive like any render.

``run_examples`` is the runner ``run_job`` uses for ``ExamplesJob`` (registered in
``fvdesk.core.jobs.run``): it scans the folder, asks each layer's cache store which images it
lacks, decodes only those (on a few threads, one batch ahead of the model), runs them through
the engine (``engine.make_engine``: truncated after the deepest layer, no gradients) and streams
their rows into one new cache segment per layer.  It yields ``ProgressEvent(done, total)`` after
every batch and ``NoticeEvent``s (skipped files, engine fallbacks), checks ``cancel`` between
batches, and returns an ``ExamplesResult`` holding every layer's ``LayerExamples``.

Bad files never stop it: unreadable, truncated, empty, oversized and non-image files are counted
and listed ("1,203 images, 4 skipped: ...") and remembered in the cache until they change.  A
cancelled pass commits what it computed; a folder that disappears mid-pass commits what was done
and raises a ``DatasetError`` saying so; an interruption (Ctrl+C) or an error keeps them too.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fvdesk.core.dataset.cache import LayerStore, SegmentWriter, StoreKey
from fvdesk.core.dataset.engine import Measure, make_engine
from fvdesk.core.dataset.examples import LayerExamples, summarize
from fvdesk.core.dataset.receptive import layer_field
from fvdesk.core.device import describe_device, pick_device
from fvdesk.core.errors import DatasetError
from fvdesk.core.imagefolder import FolderScan, ImageSkipped, fit_image, scan_folder
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.optim.events import Event, JobResult, NoticeEvent, ProgressEvent
from fvdesk.core.optim.jobs import ExamplesJob, Job

#: How many skipped files a notice names before "and N more".
SHOWN_SKIPS = 8
#: The requested layers' activations of one batch stay under this (the batch shrinks to fit).
OUTPUT_BUDGET = 512 * 2**20


@dataclass
class ExamplesResult(JobResult):
    """A finished (or cancelled) pass: every layer's examples and what was skipped."""

    layers: dict[str, LayerExamples] = field(default_factory=dict)
    root: Path = Path()
    images: int = 0  # usable images summarized
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    computed: int = 0  # images run through the model by this pass (the rest came from the cache)
    engine: str = ""

    def summary(self) -> str:
        """``1,203 images, 4 skipped: a.jpg (truncated image data), ...``."""
        return skipped_summary(self.images, self.skipped)


def skipped_summary(images: int, skipped: Sequence[tuple[str, str]]) -> str:
    text = f"{images:,} image{'s' if images != 1 else ''}"
    if not skipped:
        return text
    shown = ", ".join(f"{rel} ({why})" for rel, why in skipped[:SHOWN_SKIPS])
    more = f", and {len(skipped) - SHOWN_SKIPS:,} more" if len(skipped) > SHOWN_SKIPS else ""
    return f"{text}, {len(skipped):,} skipped: {shown}{more}"


class _FolderVanished(Exception):
    pass


def _decode(root: Path, rel: str, h: int, w: int) -> tuple[str, Any, Any]:
    """``("ok", pixels, (width, height))``, ``("skip", reason, None)`` or ``("gone", ...)``."""
    try:
        pixels, geo = fit_image(root / rel, h, w)
    except ImageSkipped as e:
        return ("skip", e.reason, None)
    except FileNotFoundError:
        return ("gone", "vanished during the pass", None)
    except OSError as e:  # a permission problem, a network drive going away
        if not root.is_dir():
            return ("gone", "vanished during the pass", None)
        return ("skip", f"unreadable ({e.strerror or e})", None)
    return ("ok", pixels, (geo.src_w, geo.src_h))


def decoded_batches(scan: FolderScan, todo: Sequence[int], size: tuple[int, int], batch: int,
                    workers: int | None = None) -> Iterator[tuple[list[int], list[tuple[str, Any, Any]]]]:  # fmt: skip
    """``(image indices, decode results)`` per batch of ``todo``, decoded on ``workers`` threads
    one batch ahead of the caller."""
    h, w = size
    chunks = [list(todo[i : i + batch]) for i in range(0, len(todo), batch)]
    n = workers or max(1, min(4, os.cpu_count() or 1))
    pool = ThreadPoolExecutor(n, thread_name_prefix="fvdesk-decode")
    pending: deque[tuple[list[int], list[Future]]] = deque()

    def submit(k: int) -> None:
        ids = chunks[k]
        pending.append(
            (ids, [pool.submit(_decode, scan.root, scan.images[i].rel, h, w) for i in ids])
        )

    try:
        for k in range(min(2, len(chunks))):
            submit(k)
        nxt = len(pending)
        while pending:
            ids, futs = pending.popleft()
            if nxt < len(chunks):
                submit(nxt)
                nxt += 1
            yield ids, [f.result() for f in futs]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def run_examples(
    model: LoadedModel,
    job: Job,
    cancelled: Callable[[], bool],
    only: Sequence[int] | None = None,
    device: torch.device | str | None = None,
) -> Generator[Event, None, ExamplesResult]:
    """The runner of ``ExamplesJob`` (see the module docstring)."""
    t0 = time.perf_counter()
    spec: ExamplesJob = job.spec  # type: ignore[assignment]  # the planner is picked by the spec's type
    spec.validate(model.graph)
    dev = device if isinstance(device, torch.device) else pick_device(device or job.settings.device)
    root = Path(spec.root)
    scan = scan_folder(root)
    if not scan.images:
        others = f" ({len(scan.other):,} other files)" if scan.other else ""
        raise DatasetError(f"The folder {root} holds no images{others}.")
    measure = Measure(spec.kind, spec.x, spec.y)
    size = (int(model.input.height), int(model.input.width))
    stores: dict[str, LayerStore] = {}
    for name in spec.targets:
        lay = model.graph[name]
        grid = (lay.spatial[0] * lay.spatial[1]) if lay.spatial else 1
        key = StoreKey.make(model, job.preprocessing, root, name, measure.key)
        stores[name] = LayerStore(key, lay.channels, max(1, grid))
    lookups = {name: st.lookup(scan) for name, st in stores.items()}
    need = {name: set(lk.todo) for name, lk in lookups.items()}
    todo = sorted(set().union(*need.values()))
    total = len(todo)
    skipped_now: dict[int, str] = {}
    engine_name = ""
    stopped = False
    yield ProgressEvent(0, total, "images", f"{len(scan.images):,} images; {total:,} to compute")
    if todo:
        engine = make_engine(model, spec.targets, measure, job.preprocessing, dev, spec.engine)
        per = _batch_size(model, spec)
        if engine.max_batch is not None:  # e.g. onnxruntime on a graph that bakes its batch in
            per = max(1, min(per, engine.max_batch))
        engine_name = engine.name
        writers = {name: st.writer() for name, st in stores.items()}
        done = 0
        try:
            for ids, results in decoded_batches(scan, todo, size, per):
                _take_batch(scan, ids, results, engine, writers, need, skipped_now)
                done += len(ids)
                yield ProgressEvent(done, total, "images")
                if cancelled():
                    stopped = True
                    break
        except _FolderVanished:
            raise DatasetError(
                f"The image folder {root} disappeared during the pass; the {done:,} images done "
                "are kept in the cache."
            ) from None
        finally:  # cancelled, interrupted or failed: the rows computed so far are kept
            for wr in writers.values():
                wr.commit()
    layers: dict[str, LayerExamples] = {}
    skipped: dict[int, str] = dict(skipped_now)
    count = 0
    for name, st in stores.items():
        lk = st.lookup(scan)
        st.compact(scan, lk)
        skipped.update(lk.skipped)
        count = max(count, lk.valid)
        lay = model.graph[name]
        layers[name] = summarize(st, lk, scan, layer=lay, measure=measure.key,
                                 field=layer_field(model, name, size), input_size=size,
                                 top=spec.top, bottom=spec.bottom)  # fmt: skip
    skip_list = [(scan.images[i].rel, why) for i, why in sorted(skipped.items())]
    skip_list += [(rel, why) for rel, why in scan.other]
    skip_list.sort()
    if count == 0 and not stopped:
        raise DatasetError(
            f"None of the {len(scan.images):,} image files in {root} can be read "
            f"({skipped_summary(0, skip_list).split(': ', 1)[-1]})."
        )
    if skip_list:
        yield NoticeEvent(f"{root}: {skipped_summary(count, skip_list)}.")
    return ExamplesResult(
        results=[],
        cancelled=stopped,
        seconds=time.perf_counter() - t0,
        device=describe_device(dev),
        layers=layers,
        root=root,
        images=count,
        skipped=skip_list,
        computed=total,
        engine=engine_name,
    )


def _batch_size(model: LoadedModel, spec: ExamplesJob) -> int:
    """``spec.batch``, smaller when the model only takes small batches or the requested layers'
    activations of a batch would exceed ``OUTPUT_BUDGET`` (many layers of a big model)."""
    per_image = 0
    for name in spec.targets:
        shape = model.graph[name].shape[1:]
        per_image += 4 * int(np.prod([d or 1 for d in shape]))
    per = max(1, min(spec.batch, OUTPUT_BUDGET // max(per_image, 1)))
    mb = model.input.max_batch
    return per if mb is None else max(1, min(per, mb))


def _take_batch(scan: FolderScan, ids: list[int], results: list[tuple[str, Any, Any]], engine: Any,
                writers: dict[str, SegmentWriter], need: dict[str, set[int]],
                skipped_now: dict[int, str]) -> None:  # fmt: skip
    """Run the decodable images of one batch and append their rows (and the skips)."""
    good = [k for k, r in enumerate(results) if r[0] == "ok"]
    for k, (status, reason, _) in enumerate(results):
        if status == "gone" and not scan.root.is_dir():
            raise _FolderVanished()
        if status != "ok":
            skipped_now[ids[k]] = reason
        if status == "skip":
            for name, wr in writers.items():
                if ids[k] in need[name]:
                    wr.skip(scan.images[ids[k]], reason)
    if not good:
        return
    pixels = np.stack([results[k][1] for k in good])
    rows = engine.run(pixels)
    for name, wr in writers.items():
        sel = [j for j, k in enumerate(good) if ids[k] in need[name]]
        if sel:
            wr.add([scan.images[ids[good[j]]] for j in sel], [results[good[j]][2] for j in sel],
                   rows[name][sel])  # fmt: skip
