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
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fvdesk.core.dataset.cache import LayerStore, Lookup, SegmentWriter, StoreKey
from fvdesk.core.dataset.decode import decode_chunk, decode_file, process_context
from fvdesk.core.dataset.engine import Measure, make_engine
from fvdesk.core.dataset.examples import LayerExamples, summarize
from fvdesk.core.dataset.prepared import PreparedKeeper, PreparedStore
from fvdesk.core.dataset.receptive import layer_field
from fvdesk.core.device import describe_device, pick_device
from fvdesk.core.errors import DatasetError
from fvdesk.core.imagefolder import FolderScan, scan_folder
from fvdesk.core.jobs.job import ExamplesJob, Job
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.optim.events import Event, JobResult, NoticeEvent, ProgressEvent

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


@dataclass(frozen=True)
class PassOptions:
    """How a pass runs, not what it finds (every choice here gives the same rows).

    ``workers``: decode processes; ``0`` or ``None`` (the default): one decode thread per core
    in this process.  Pillow decodes and resizes without holding the GIL, and on 2 cores the
    threads measured as fast as processes or faster (benchmarks/README.md); processes also
    start the calling script again in each worker (``spawn``/``forkserver``), so a script
    without an ``if __name__ == "__main__":`` guard cannot use them.  ``reduced``: reduced-
    scale JPEG decoding (``imagefolder.fit_image``; off, the rows go to another store).
    ``shard=(i, n)``: compute only images ``i, i+n, ...`` of the folder into the cache and
    summarize nothing (``--merge`` then summarizes, with ``compute=False``: every image must be
    in the cache).  ``checkpoint_s`` / ``checkpoint_images``: commit the rows so far that often,
    so a killed pass loses at most that much work.  ``prepared``: keep the fitted images
    (``dataset.prepared``) and read them in later passes at the same input size.
    """

    workers: int | None = None
    reduced: bool = True
    shard: tuple[int, int] | None = None
    compute: bool = True
    checkpoint_s: float = 30.0
    checkpoint_images: int | None = None
    prepared: bool = True


def _decode(root: Path, rel: str, h: int, w: int, reduced: bool = True) -> tuple[str, Any, Any]:
    """``decode.decode_file`` (a name of this module, so tests can hold the thread path)."""
    return decode_file(root, rel, h, w, reduced)


def decode_processes(workers: int | None, images: int) -> int:
    """How many decode processes a pass of ``images`` images starts (see ``PassOptions``)."""
    return 0 if workers is None or images == 0 else max(0, int(workers))


def decoded_batches(scan: FolderScan, todo: Sequence[int] | np.ndarray, size: tuple[int, int], batch: int,
                    workers: int | None = 0, *, reduced: bool = True,
                    prepared: tuple[PreparedStore, Lookup] | None = None) -> Generator[tuple[list[int], list[tuple[str, Any, Any]]], None, None]:  # fmt: skip
    """``(image indices, decode results)`` per batch of ``todo``, in order, decoded ahead of the
    caller: on threads (``workers=0``) or in ``workers`` processes, a bounded number of
    batches in flight (memory: about ``workers + 1`` batches of model-sized pixels).  Images
    that ``prepared`` holds are read from it instead of decoded."""
    h, w = size
    chunks = _Chunks(todo, batch)
    procs = decode_processes(workers, len(todo))
    pool: Any
    if procs:
        pool = ProcessPoolExecutor(procs, mp_context=process_context())
        ahead = procs + 1

        def submit(ids: list[int]) -> Callable[[], list[Any]]:
            rels = [scan.images.rel(i) for i in ids]
            return pool.submit(decode_chunk, str(scan.root), rels, h, w, reduced).result
    else:
        pool = ThreadPoolExecutor(max(1, os.cpu_count() or 1), "fvdesk-decode")
        ahead = 2

        def submit(ids: list[int]) -> Callable[[], list[Any]]:
            futs = [pool.submit(_decode, scan.root, scan.images.rel(i), h, w, reduced) for i in ids]
            return lambda: [f.result() for f in futs]

    start = submit if prepared is None else _reading(prepared, submit)
    try:
        pending = deque((chunks[k], start(chunks[k])) for k in range(min(ahead, len(chunks))))
        nxt = len(pending)
        while pending:
            ids, get = pending.popleft()
            if nxt < len(chunks):
                pending.append((chunks[nxt], start(chunks[nxt])))
                nxt += 1
            yield ids, get()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _reading(prepared: tuple[PreparedStore, Lookup],
             submit: Callable[[list[int]], Callable[[], list[Any]]]) -> Callable[[list[int]], Callable[[], list[Any]]]:  # fmt: skip
    """``submit`` for the images ``prepared`` lacks; the others are read from it."""
    store, lk = prepared

    def both(ids: list[int]) -> Callable[[], list[Any]]:
        held = [i for i in ids if lk.seg[i] >= 0]
        got = dict(zip(held, store.read(lk, held), strict=True))
        miss = [i for i in ids if got.get(i, ("miss",))[0] == "miss"]
        get = submit(miss) if miss else list

        def results() -> list[Any]:
            got.update(zip(miss, get(), strict=True))
            return [got[i] for i in ids]

        return results

    return both


class _Chunks:
    """``todo`` in batches of ``batch`` folder indices, made on access (a list of every batch
    would hold a Python integer per image)."""

    def __init__(self, todo: Sequence[int] | np.ndarray, batch: int) -> None:
        self.todo, self.batch = np.asarray(todo, dtype=np.int64), max(1, int(batch))

    def __len__(self) -> int:
        return -(-len(self.todo) // self.batch)

    def __getitem__(self, k: int) -> list[int]:
        return self.todo[k * self.batch : (k + 1) * self.batch].tolist()


def shard_share(todo: Sequence[int] | np.ndarray, shard: tuple[int, int] | None) -> np.ndarray:
    """Shard ``i`` of ``n`` takes the images whose folder index is ``i`` modulo ``n`` (balanced,
    and the same split whatever each shard finds in the cache)."""
    ids = np.asarray(todo, dtype=np.int64)
    if shard is None:
        return ids
    i, n = shard
    return ids[ids % n == i]


def run_examples(
    model: LoadedModel,
    job: Job,
    cancelled: Callable[[], bool],
    only: Sequence[int] | None = None,
    device: torch.device | str | None = None,
    *,
    options: PassOptions | None = None,
) -> Generator[Event, None, ExamplesResult]:
    """The runner of ``ExamplesJob`` (see the module docstring); ``options``: ``PassOptions``."""
    t0 = time.perf_counter()
    opts = options or PassOptions()
    spec: ExamplesJob = job.spec  # type: ignore[assignment]  # the runner registered for ExamplesJob
    spec.validate(model.graph)
    dev = device if isinstance(device, torch.device) else pick_device(device or job.settings.device)
    root = Path(spec.root)
    scan = _scan(root)
    measure = Measure(spec.kind, spec.x, spec.y)
    stores = _stores(model, job, root, measure, opts)
    need = {name: _mask(len(scan.images), shard_share(st.lookup(scan).todo, opts.shard))
            for name, st in stores.items()}  # fmt: skip
    todo = np.flatnonzero(np.logical_or.reduce(list(need.values()))) if need else np.zeros(0, int)
    if len(todo) and not opts.compute:
        raise DatasetError(
            f"{len(todo):,} images of {root} have no rows in the examples cache yet; run every "
            "shard of the pass (with the same cache folder) before merging."
        )
    total = len(todo)
    yield ProgressEvent(0, total, "images", f"{len(scan.images):,} images; {total:,} to compute")
    run = _Run(scan, need, {}, opts, cancelled)
    if len(todo):
        yield from run.compute(model, spec, measure, job.preprocessing, dev, stores, todo)
    result = ExamplesResult(results=[], cancelled=run.stopped, seconds=0.0, device=describe_device(dev),
                            root=root, computed=total, engine=run.engine)  # fmt: skip
    if opts.shard is None:
        yield from _summarize(model, spec, measure, scan, stores, run, result)
    result.seconds = time.perf_counter() - t0
    return result


def _mask(n: int, ids: np.ndarray) -> np.ndarray:
    """A boolean array over the folder's ``n`` images, true at ``ids``."""
    m = np.zeros(n, bool)
    m[ids] = True
    return m


def _scan(root: Path) -> FolderScan:
    scan = scan_folder(root)
    if not scan.images:
        others = f" ({len(scan.other):,} other files)" if scan.other else ""
        raise DatasetError(f"The folder {root} holds no images{others}.")
    return scan


def _stores(model: LoadedModel, job: Job, root: Path, measure: Measure,
            opts: PassOptions) -> dict[str, LayerStore]:  # fmt: skip
    """Each layer's cache store; rows decoded at full scale are kept apart from reduced ones."""
    stores: dict[str, LayerStore] = {}
    for name in job.spec.targets:  # type: ignore[attr-defined]  # job.spec is an ExamplesJob here
        lay = model.graph[name]
        grid = (lay.spatial[0] * lay.spatial[1]) if lay.spatial else 1
        key = StoreKey.make(model, job.preprocessing, root, name, measure.key)
        if not opts.reduced:
            key = replace(key, fit=key.fit + "+full-scale-decode")
        stores[name] = LayerStore(key, lay.channels, max(1, grid))
    return stores


@dataclass
class _Run:
    """One pass's computing part: decode, run the engine, stream rows into checkpointed
    segments (a new segment every ``checkpoint_s`` seconds or ``checkpoint_images`` images)."""

    scan: FolderScan
    need: dict[str, np.ndarray]  # per layer, a boolean over the folder's images: rows to compute
    skipped: dict[int, str]
    opts: PassOptions
    cancel: Callable[[], bool]
    engine: str = ""
    stopped: bool = False

    def compute(self, model: LoadedModel, spec: ExamplesJob, measure: Measure, pre: Any,
                dev: torch.device, stores: dict[str, LayerStore],
                todo: np.ndarray) -> Generator[Event, None, None]:  # fmt: skip
        engine = make_engine(model, spec.targets, measure, pre, dev, spec.engine)
        per = _batch_size(model, spec)
        if engine.max_batch is not None:  # e.g. onnxruntime on a graph that bakes its batch in
            per = max(1, min(per, engine.max_batch))
        self.engine = engine.name
        size = (int(model.input.height), int(model.input.width))
        writers = {name: st.writer(self.scan.images) for name, st in stores.items()}
        done, since, last = 0, 0, time.monotonic()
        keep = PreparedKeeper.open(self.scan, size, reduced=self.opts.reduced,
                                   enabled=self.opts.prepared)  # fmt: skip
        batches = decoded_batches(self.scan, todo, size, per, self.opts.workers,
                                  reduced=self.opts.reduced,
                                  prepared=None if keep is None else keep.source())  # fmt: skip
        try:
            for ids, results in batches:
                _take_batch(self.scan, ids, results, engine, writers, self.need, self.skipped)
                if keep is not None:
                    keep.add(self.scan, ids, results)
                done, since = done + len(ids), since + len(ids)
                yield ProgressEvent(done, len(todo), "images")
                if self.cancel():
                    self.stopped = True
                    break
                if self._checkpoint_due(since, last):
                    for name, wr in writers.items():  # commit; the pass goes on in a new segment
                        wr.commit()
                        writers[name] = stores[name].writer(self.scan.images)
                    since, last = 0, time.monotonic()
        except _FolderVanished:
            raise DatasetError(
                f"The image folder {self.scan.root} disappeared during the pass; the {done:,} "
                "images done are kept in the cache."
            ) from None
        finally:  # cancelled, interrupted or failed: the rows computed so far are kept
            batches.close()
            for wr in writers.values():
                wr.commit()
            if keep is not None:
                keep.commit(self.scan)

    def _checkpoint_due(self, since: int, last: float) -> bool:
        every = self.opts.checkpoint_images
        return (every is not None and since >= every) or (
            time.monotonic() - last >= self.opts.checkpoint_s
        )


def _summarize(model: LoadedModel, spec: ExamplesJob, measure: Measure, scan: FolderScan,
               stores: dict[str, LayerStore], run: _Run,
               result: ExamplesResult) -> Generator[Event, None, None]:  # fmt: skip
    """Every layer's examples from its store (compacted first), the skipped files' notice."""
    size = (int(model.input.height), int(model.input.width))
    skipped: dict[int, str] = dict(run.skipped)
    count = 0
    for name, st in stores.items():
        lk = st.lookup(scan)
        st.compact(scan, lk)
        skipped.update(lk.skipped)
        count = max(count, lk.valid)
        result.layers[name] = summarize(st, lk, scan, layer=model.graph[name],
                                        measure=measure.key, field=layer_field(model, name, size),
                                        input_size=size, top=spec.top, bottom=spec.bottom)  # fmt: skip
    skip_list = [(scan.images[i].rel, why) for i, why in sorted(skipped.items())]
    skip_list += [(rel, why) for rel, why in scan.other]
    skip_list.sort()
    if count == 0 and not run.stopped:
        raise DatasetError(
            f"None of the {len(scan.images):,} image files in {scan.root} can be read "
            f"({skipped_summary(0, skip_list).split(': ', 1)[-1]})."
        )
    if skip_list:
        yield NoticeEvent(f"{scan.root}: {skipped_summary(count, skip_list)}.")
    result.images, result.skipped = count, skip_list


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
                writers: dict[str, SegmentWriter], need: dict[str, np.ndarray],
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
                if need[name][ids[k]]:
                    wr.skip(scan.images[ids[k]], reason)
    if not good:
        return
    pixels = np.stack([results[k][1] for k in good])
    rows = engine.run(pixels)
    for name, wr in writers.items():
        sel = [j for j, k in enumerate(good) if need[name][ids[k]]]
        if sel:
            wr.add([ids[good[j]] for j in sel], [results[good[j]][2] for j in sel], rows[name][sel])
