"""The runner of ``ActivationAtlasJob`` (registered with ``run_job``): collect, lay out, render.

Resume, as the unit atlas: the vectors, their map and the cells are written first
(``vectors.npz``, then the manifest); cells are rendered in fixed chunks of ``settings.batch``
(cell order), each chunk one ``DirectionJob`` of its cells' unit-length means, and committed as
it finishes (tiles, then the manifest, atomically).  Running the same job again on the same
folder skips the collection and the layout and renders only the chunks left; a job with another
recipe, other render settings or preprocessing is refused rather than mixed in.

Reproduction: every chunk stores the provenance record of its first cell (``Job.provenance``:
spec with the directions, settings, seed, batch), and the manifest stores the job; on CPU the
same job over the same folder gives the same vectors, map, cells and tiles (UMAP is seeded and
single-threaded, each chunk is rendered whole).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shlex
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fvdesk.core.actatlas.collect import Collection, collect
from fvdesk.core.actatlas.layout import Cell, class_support, grid_cells, reduce_2d, top_units
from fvdesk.core.actatlas.spec import DEFAULT_MAX_BYTES, ActivationAtlasJob
from fvdesk.core.dataset.receptive import layer_field
from fvdesk.core.device import describe_device, pick_device
from fvdesk.core.errors import ConfigError
from fvdesk.core.fileio import atomic_write_bytes
from fvdesk.core.imagefolder import ImageSkipped, fit_image
from fvdesk.core.jobs.job import DirectionJob, Job
from fvdesk.core.jobs.run import register_runner, run_job
from fvdesk.core.model.loaded import LoadedModel
from fvdesk.core.optim.events import Event, JobResult, NoticeEvent, UnitDoneEvent
from fvdesk.core.output import actatlas as out_mod

CROP_PX = 64
#: Settings that change speed, not the picture (a resume may differ in them).
IGNORED = frozenset({"batch", "preview_every", "device", "channels_last"})


@dataclass
class ActivationAtlasResult(JobResult):
    """A finished (or cancelled) atlas: where it is and what this run did."""

    out: Path = Path()
    cells: int = 0
    rendered: int = 0  # by this run
    skipped: int = 0  # found done
    manifest: dict[str, Any] = field(default_factory=dict)


def command_line(job: Job, model_path: str) -> str:
    """The ``fvdesk activation-atlas`` command that makes this atlas (settings as flags are many;
    ``--from DIR`` is the exact rebuild, this line is the readable one)."""
    s: ActivationAtlasJob = job.spec  # type: ignore[assignment]  # the runner registered for ActivationAtlasJob
    parts = ["fvdesk", "activation-atlas", model_path, "--images", s.root, "--layer", s.layer,
             "--out", s.out, "--grid", str(s.grid), "--per-image", str(s.per_image),
             "--min-count", str(s.min_count), "--sample-seed", str(s.seed),
             "--steps", str(job.settings.steps)]  # fmt: skip
    if job.settings.size:
        parts += ["--size", str(job.settings.size)]
    return shlex.join(parts)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _comparable(job: Job) -> dict[str, Any]:
    pre = {k: v for k, v in job.preprocessing.to_dict().items() if k != "source"}
    settings = {k: v for k, v in job.settings.to_dict().items() if k not in IGNORED}
    return {"recipe": job.spec.recipe(), "settings": settings, "pre": pre,  # type: ignore[attr-defined]  # job.spec is an ActivationAtlasJob here
            "model": job.model.sha256}  # fmt: skip


def _old_manifest(out: Path, job: Job) -> dict[str, Any] | None:
    if not (out / out_mod.MANIFEST).is_file():
        return None
    old = out_mod.read_manifest(out)
    was = {"recipe": {k: v for k, v in old["job"].items() if k != "out"},
           "settings": {k: v for k, v in old["settings"].items() if k not in IGNORED},
           "pre": {k: v for k, v in old["preprocessing"].items() if k != "source"},
           "model": old["model"].get("sha256")}  # fmt: skip
    now = _comparable(job)
    if was != now:
        what = next(k for k in now if now[k] != was[k])
        raise ConfigError(
            f"{out / out_mod.MANIFEST} holds an activation atlas made with another {what}; use "
            "the same options or another --out folder."
        )
    vec = out / old.get("vectors", {}).get("file", out_mod.VECTORS)
    if not vec.is_file() or _sha(vec) != old["vectors"].get("sha256"):
        return None  # the vectors are gone or changed: start over
    return old


def _crop(root: Path, rel: str, size: tuple[int, int], box: Sequence[float]) -> np.ndarray | None:
    from PIL import Image

    try:
        pixels, _geo = fit_image(root / rel, *size)
    except (ImageSkipped, OSError):
        return None
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    part = pixels[max(0, y0) : max(y0 + 1, y1), max(0, x0) : max(x0 + 1, x1)]
    h, w = part.shape[:2]  # the field's shape kept (a text model's fields are wide strips)
    k = CROP_PX / max(h, w)
    size = (max(1, round(w * k)), max(1, round(h * k)))
    return np.asarray(Image.fromarray(part).resize(size, Image.Resampling.LANCZOS))


def _save_vectors(out: Path, col: Collection, coords: np.ndarray, owner: np.ndarray,
                  cells: list[Cell]) -> str:  # fmt: skip
    buf = io.BytesIO()
    means = np.stack([c.mean for c in cells]) if cells else np.zeros((0, col.vectors.shape[1]))
    np.savez(buf, vectors=col.vectors, image=col.image, gy=col.gy, gx=col.gx, coords=coords,
             owner=owner, means=means.astype(np.float64))  # fmt: skip
    data = buf.getvalue()
    atomic_write_bytes(out / out_mod.VECTORS, data)
    return hashlib.sha256(data).hexdigest()


def load_vectors(out: str | Path) -> dict[str, np.ndarray]:
    """The arrays of ``vectors.npz`` (vectors, image, gy, gx, coords, owner, means)."""
    with np.load(Path(out) / out_mod.VECTORS, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _lay_out(model: LoadedModel, job: Job, dev: torch.device,
             cancelled: Callable[[], bool]) -> Generator[Event, None, dict[str, Any] | None]:  # fmt: skip
    """Collect, reduce, grid; writes vectors.npz and the manifest's first version."""
    s: ActivationAtlasJob = job.spec  # type: ignore[assignment]  # the runner registered for ActivationAtlasJob
    out = Path(s.out)
    t0 = time.perf_counter()
    col = yield from collect(model, s.root, s.layer, per_image=s.per_image, seed=s.seed,
                             max_vectors=s.max_vectors, max_bytes=DEFAULT_MAX_BYTES,
                             pre=job.preprocessing, device=dev, cancelled=cancelled)  # fmt: skip
    if col.cancelled:
        return None
    t1 = time.perf_counter()
    yield NoticeEvent(f"UMAP of {len(col.vectors):,} vectors ({col.vectors.shape[1]} channels)")
    coords = reduce_2d(col.vectors, seed=s.seed, neighbors=s.neighbors, min_dist=s.min_dist)
    cells, owner, box = grid_cells(coords, col.vectors, s.grid, s.min_count, s.crops)
    t2 = time.perf_counter()
    support = class_support(model, s.layer, np.stack([c.mean for c in cells]), job.preprocessing,
                            dev) if (s.classes and cells) else None  # fmt: skip
    size = (int(model.input.height), int(model.input.width))
    fld = layer_field(model, s.layer, size)
    labels = job.labels or ()
    folders = np.array([r.split("/", 1)[0] if "/" in r else "" for r in col.rels])
    records = []
    (out / "crops").mkdir(parents=True, exist_ok=True)
    for c in cells:
        crops = []
        for k, m in enumerate(c.crops):
            rel = col.rels[col.image[m]]
            bx = fld.box(int(col.gy[m]), int(col.gx[m]))
            img = _crop(Path(s.root), rel, size, bx)
            if img is None:
                continue
            name = f"crops/c{c.id:04d}_{k}.png"
            atomic_write_bytes(out / name, out_mod.png_bytes(img))
            crops.append({"file": name, "source": rel, "gy": int(col.gy[m]), "gx": int(col.gx[m]),
                          "box": [round(v, 2) for v in bx]})  # fmt: skip
        names, counts = np.unique(folders[col.image[c.members]], return_counts=True)
        order = np.argsort(-counts, kind="stable")[:3]
        cls = None
        if support is not None:
            k = int(np.argmax(support[c.id]))
            label = labels[k] if k < len(labels) else f"class {k}"
            cls = {"index": k, "label": label, "score": float(support[c.id, k])}
        records.append({"id": c.id, "i": c.i, "j": c.j, "count": len(c.members),
                        "top_units": top_units(c.mean), "crops": crops, "class": cls,
                        "folders": [[str(names[o]), int(counts[o])] for o in order],
                        "tile": None, "value": None, "chunk": None, "slot": None})  # fmt: skip
    from fvdesk import __version__

    manifest = {
        "format": out_mod.FORMAT, "version": out_mod.VERSION, "fvdesk_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": job.model.to_dict(), "job": s.to_dict(), "settings": job.settings.to_dict(),
        "preprocessing": job.preprocessing.to_dict(),
        "labels": list(labels) if labels else None,
        "command": command_line(job, job.model.path or job.model.file),
        "collection": {"images": len(col.rels), "vectors": len(col.vectors),
                       "channels": int(col.vectors.shape[1]), "per_image": col.per_image,
                       "sources": col.rels,  # vectors.npz "image" indexes these
                       "skipped": [list(x) for x in col.skipped], "field": fld.describe(),
                       "seconds": round(t1 - t0, 3)},
        "layout": {"method": "umap", "metric": "cosine", "neighbors": s.neighbors,
                   "min_dist": s.min_dist, "box": list(box), "seconds": round(t2 - t1, 3),
                   "classes": "forward from the layer" if support is not None else None},
        "vectors": {"file": out_mod.VECTORS,
                    "sha256": _save_vectors(out, col, coords, owner, cells)},
        "cells": records, "chunks": [],
    }  # fmt: skip
    out_mod.write_manifest(out, manifest)
    return manifest


def run_activation_atlas(model: LoadedModel, job: Job, cancelled: Callable[[], bool],
                         only: Sequence[int] | None = None,
                         device: torch.device | str | None = None,
                         ) -> Generator[Event, None, ActivationAtlasResult]:  # fmt: skip
    """The runner of ``ActivationAtlasJob`` (see the module docstring)."""
    t0 = time.perf_counter()
    s: ActivationAtlasJob = job.spec  # type: ignore[assignment]  # the runner registered for ActivationAtlasJob
    s.validate(model.graph)
    dev = device if isinstance(device, torch.device) else pick_device(device or job.settings.device)
    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _old_manifest(out, job)
    if manifest is None:
        manifest = yield from _lay_out(model, job, dev, cancelled)
        if manifest is None:
            return ActivationAtlasResult([], True, time.perf_counter() - t0, describe_device(dev),
                                         out=out)  # fmt: skip
    cells = manifest["cells"]
    means = load_vectors(out)["means"]
    per = max(1, int(job.settings.batch))
    chunks = [list(range(a, min(a + per, len(cells)))) for a in range(0, len(cells), per)]
    todo = [k for k, ids in enumerate(chunks) if not all(_done(out, cells[i]) for i in ids)]
    skipped = sum(len(chunks[k]) for k in range(len(chunks)) if k not in set(todo))
    yield out_mod.AtlasLaidOut(len(cells), skipped, str(out))  # type: ignore[misc]  # run_job passes atlas events on to the caller
    done, rendered, stopped = skipped, 0, False
    try:
        for k in todo:
            ids = chunks[k]
            vec = means[ids] / np.linalg.norm(means[ids], axis=1, keepdims=True)
            spec = DirectionJob(s.layer, vectors=tuple(map(tuple, vec.tolist())),
                                source=f"{out_mod.VECTORS} cells {ids[0]}-{ids[-1]}")  # fmt: skip
            sub = Job(spec, job.settings, job.preprocessing, job.model, job.labels,
                      f"atlas cells {ids[0]}-{ids[-1]}")  # fmt: skip
            results = {}
            gen = run_job(model, sub, cancelled, device=dev)
            for ev in gen:
                if isinstance(ev, UnitDoneEvent):
                    if not getattr(ev.result, "cancelled", False):
                        results[ev.result.slot] = ev.result
                    continue
                yield ev
            if cancelled() or len(results) < len(ids):
                stopped = True
                break
            first = results[0]
            rec = first.provenance.to_dict()
            manifest["chunks"].append({"index": k, "cells": ids, "provenance": rec})
            for slot, cid in enumerate(ids):
                r = results[slot]
                name = f"tiles/c{cid:04d}.png"
                (out / "tiles").mkdir(exist_ok=True)
                atomic_write_bytes(out / name, out_mod.png_bytes(r.image))
                cells[cid].update(tile=name, value=float(r.value), chunk=k, slot=slot)
            out_mod.write_manifest(out, manifest)
            for cid in ids:
                done += 1
                rendered += 1
                yield out_mod.CellRendered(cid, cells[cid]["tile"], done, len(cells))  # type: ignore[misc]  # run_job passes atlas events on to the caller
    finally:
        with contextlib.suppress(Exception):
            out_mod.write_overview(out, manifest)
            out_mod.write_index(out, manifest)
    return ActivationAtlasResult([], stopped, time.perf_counter() - t0, describe_device(dev),
                                 out=out, cells=len(cells), rendered=rendered, skipped=skipped,
                                 manifest=manifest)  # fmt: skip


def _done(out: Path, cell: dict[str, Any]) -> bool:
    return bool(cell.get("tile")) and (out / cell["tile"]).is_file()


def job_from_manifest(manifest: dict[str, Any], out: str | None = None,
                      root: str | None = None) -> Job:  # fmt: skip
    """The job a manifest records (``out``/``root`` override where it is written / read from)."""
    from fvdesk.core.jobs.job import ModelRef, parse_preprocessing
    from fvdesk.core.optim.settings import RenderSettings

    d = dict(manifest["job"])
    if out is not None:
        d["out"] = str(out)
    if root is not None:
        d["root"] = str(root)
    spec = ActivationAtlasJob.from_dict(d)
    m, pre = manifest["model"], manifest["preprocessing"]
    labels = manifest.get("labels")
    return Job(spec, RenderSettings.from_dict(manifest["settings"]),
               parse_preprocessing(pre, str(pre.get("source", "user")), "the atlas manifest"),
               ModelRef(m.get("file", ""), m.get("sha256", ""), m.get("path", "")),
               tuple(labels) if labels else None, spec.title)  # fmt: skip


register_runner(ActivationAtlasJob, run_activation_atlas)
