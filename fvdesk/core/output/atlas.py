"""The atlas: every unit of many layers, rendered so that no work is ever lost.

Layout of an atlas folder ``DIR``::

    DIR/atlas.json                 what was asked: model, objective, settings, the layers
    DIR/index.html                 links to every layer's gallery, with a few thumbnails each
    DIR/007_conv2_Conv/            one gallery per layer (see ``fvdesk.core.output.gallery``), named
        gallery.json               from the layer's topological index and its sanitized name
        gallery.shard-0-of-4.json  (per-shard manifests when sharded)
        conv2_Conv_u0000.png ...

Resume: every finished unit is committed to its layer gallery as it completes (PNG first, then the
manifest, both atomic).  Re-running the same command skips committed units and re-renders the
rest; a kill at any moment leaves at most a PNG without entry (overwritten) or a hidden temp file
(removed).

Sharding: ``shard=(i, n)`` renders jobs ``i, i+n, i+2n, ...`` of the global (layer, unit) list,
so shards stay balanced even when layers have few units.  Shards write only their own manifest
file (``gallery.shard-i-of-n.json``) in each layer folder, so any number of processes or
machines can share ``DIR`` without locks (also on network file systems).  ``merge_atlas`` folds the
shard manifests and rebuilds all indexes afterwards.  All shards must use the same layers, units
and settings; a resumed run with different settings is refused (``AtlasSettingsMismatch``) unless
``force`` re-renders the units recorded with other settings.

Planning (layers, shards, the settings a resume compares) is ``atlas_plan.py``; its names stay
importable from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fvdesk.core.errors import GalleryError
from fvdesk.core.fileio import atomic_write_text, parse_json
from fvdesk.core.model.layers import format_shape
from fvdesk.core.optim.drive import cancel_fn
from fvdesk.core.output.atlas_plan import (  # noqa: F401 - the atlas's names in one import
    _THUMBS,
    ATLAS_FORMAT,
    ATLAS_JSON,
    ATLAS_VERSION,
    IGNORED_SETTINGS,
    INDEX,
    AtlasLayer,
    AtlasSettingsMismatch,
    LayerSelectionError,
    _diff,
    _ints,
    _short,
    comparable,
    item_comparable,
    layer_folder,
    parse_shard,
    plan_atlas,
    shard_work,
)
from fvdesk.core.output.gallery import (
    Gallery,
    GalleryItem,
    ModelInfo,
    is_gallery,
    merge_gallery,
    read_gallery,
)
from fvdesk.core.output.html import esc, model_line, page, table, text_of


# ------------------------------------------------------------------------------------------------
# Events
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerStarted:
    layer: str
    folder: str
    units: int  # this shard's pending units in the layer


@dataclass(frozen=True)
class UnitCommitted:
    layer: str
    unit: int
    item: GalleryItem
    done: int  # this shard's finished units so far (skipped ones included)
    total: int


@dataclass(frozen=True)
class LayerFinished:
    layer: str
    folder: str


@dataclass
class Todo:
    """What ``prepare`` found: this shard's total units, those already done, and what is left."""

    total: int
    skipped: int
    pending: list[tuple[AtlasLayer, list[int]]] = field(default_factory=list)

    @property
    def remaining(self) -> int:
        return sum(len(u) for _, u in self.pending)


@dataclass
class AtlasSummary:
    layers: int
    units: int  # committed units visible in the atlas
    rendered: int = 0  # by this run
    skipped: int = 0  # found done by this run


class BatchCommitter:
    """Commits the images of each finished render batch to a gallery in one manifest write.

    A job yields the ``UnitDoneEvent``s of a batch back to back; they are buffered and committed
    (PNGs, then one atomic manifest write) as soon as any other event arrives or the job ends.
    Images of a cancelled render are never committed (an early stop is not a cancel).
    """

    def __init__(self, gallery: Gallery, *, device: str) -> None:
        self.gallery = gallery
        self.device = device
        self.pending: list[Any] = []

    def offer(self, event: Any) -> bool:
        """Take a ``UnitDoneEvent`` (True) or leave the event to the caller (False)."""
        from fvdesk.core.optim.events import UnitDoneEvent

        if not isinstance(event, UnitDoneEvent):
            return False
        r = event.result
        if not getattr(r, "cancelled", False):
            self.pending.append(r)
        return True

    def flush(self) -> list[GalleryItem]:
        """Commit what is buffered; returns the committed items."""
        if not self.pending:
            return []
        pairs = [
            (GalleryItem.from_result(r, device=self.device, seconds=round(r.seconds, 4)), r.image)
            for r in self.pending
        ]
        self.pending = []
        return self.gallery.add_many(pairs)


# ------------------------------------------------------------------------------------------------
# The run
# ------------------------------------------------------------------------------------------------
class Atlas:
    """One atlas run (one shard of it, when sharded).

    ``prepare()`` checks/creates ``atlas.json``, opens the layer galleries and works out what is
    left; ``run()`` is a generator yielding the engine's events plus ``LayerStarted``,
    ``UnitCommitted`` and ``LayerFinished``, and returns an ``AtlasSummary``.
    """

    def __init__(
        self,
        model: Any,
        out: str | os.PathLike[str],
        plan: Sequence[AtlasLayer],
        settings: Any,
        *,
        objective: str = "channel",
        shard: tuple[int, int] | None = None,
        force: bool = False,
        cancel: Any = None,
        preprocessing: Any = None,
        labels: Sequence[str] | None = None,
        decorate: Callable[[Gallery, AtlasLayer], None] | None = None,
    ) -> None:
        self.model = model
        self.out = Path(out)
        self.plan = list(plan)
        self.settings = settings
        # captured: the whole atlas uses one (the app passes the choices in force)
        self.preprocessing = preprocessing or model.preprocessing
        self.labels = labels if labels is not None else model.labels
        self.objective = objective
        self.want = comparable(settings.to_dict(), self.preprocessing.to_dict(), objective)
        self.shard = shard
        self.force = force
        self.cancel = cancel
        self.decorate = decorate  # adds to a layer's gallery before its index (dataset examples)
        self.info = ModelInfo.from_model(model)
        self._todo: Todo | None = None
        self._galleries: dict[str, Gallery] = {}

    @property
    def device_text(self) -> str:
        from fvdesk.core.device import describe_device

        return describe_device(self.model.device)

    def prepare(self) -> Todo:
        """Validate ``DIR`` against this run and list the units still to render."""
        meta = self._check_atlas_json()
        relaxed = meta is not None and _meta_comparable(meta) == self.want
        self._write_atlas_json(meta)
        total = skipped = 0
        pending = []
        want = self.want
        for layer, units in shard_work(self.plan, self.shard):
            g = Gallery.open(
                self.out / layer.folder,
                self.info,
                shard=self.shard,
                title=layer.name,
                device=self.device_text,
            )
            self._galleries[layer.name] = g
            left = []
            for u in units:
                total += 1
                it = g.get(layer.name, u, 0, self.objective)
                if it is None:
                    left.append(u)
                elif item_comparable(it) != want:
                    if not (self.force or relaxed):
                        raise AtlasSettingsMismatch(
                            f"{g.folder / it.file} was rendered with other settings ({_diff(item_comparable(it), want)}); "
                            "use the same options, another --out folder, or --force to re-render."
                        )
                    left.append(u)  # re-render under the settings the atlas is now committed to
                else:
                    skipped += 1
            if left:
                pending.append((layer, left))
        self._todo = Todo(total, skipped, pending)
        return self._todo

    def run(self) -> Generator[Any, None, AtlasSummary]:
        from fvdesk.core.jobs.job import Job, ModelRef, UnitJob
        from fvdesk.core.jobs.run import run_job

        todo = self._todo or self.prepare()
        labels = tuple(self.labels) if self.labels else None
        done = todo.skipped
        rendered = 0
        try:
            for layer, units in todo.pending:
                g = self._galleries[layer.name]
                yield LayerStarted(layer.name, layer.folder, len(units))
                committer = BatchCommitter(g, device=self.device_text)
                spec = UnitJob(layer.name, tuple(units), kind=self.objective)
                job = Job(spec, self.settings, self.preprocessing, ModelRef.of(self.model),
                          labels, f"atlas: {layer.name}")  # fmt: skip
                gen = run_job(self.model, job, self.cancel, device=self.model.device)
                try:
                    for ev in gen:
                        if committer.offer(ev):
                            continue
                        for item in committer.flush():
                            done += 1
                            rendered += 1
                            yield UnitCommitted(layer.name, item.unit, item, done, todo.total)
                        yield ev
                except BaseException:  # Ctrl+C, SIGTERM: finished renders are still worth keeping
                    with contextlib.suppress(Exception):
                        committer.flush()
                    raise
                for item in committer.flush():
                    done += 1
                    rendered += 1
                    yield UnitCommitted(layer.name, item.unit, item, done, todo.total)
                if self.decorate is not None:
                    self.decorate(g, layer)
                g.finalize()
                yield LayerFinished(layer.name, layer.folder)
                if cancel_fn(self.cancel)():
                    break
            if self.decorate is not None and not cancel_fn(self.cancel)():
                pending = {layer.name for layer, _ in todo.pending}
                for layer, _units in shard_work(self.plan, self.shard):
                    if layer.name not in pending:  # all its units were done by an earlier run
                        self.decorate(self._galleries[layer.name], layer)
                        self._galleries[layer.name].finalize()
        finally:
            with contextlib.suppress(Exception):
                write_atlas_index(self.out)
        if self.shard is None:  # single writer: tidy orphans of killed runs
            for g in self._galleries.values():
                with contextlib.suppress(GalleryError):
                    g.prune()
        items = sum(len(g.items) for g in self._galleries.values())
        return AtlasSummary(len(self._galleries), items, rendered, todo.skipped)

    # -- atlas.json ------------------------------------------------------------------------------
    def _check_atlas_json(self) -> dict[str, Any] | None:
        path = self.out / ATLAS_JSON
        if self.out.exists() and not self.out.is_dir():
            raise GalleryError(f"{self.out} is a file, not an atlas folder.")
        meta = _read_atlas_json(path) if path.exists() else None
        if meta is None and self.out.is_dir():
            foreign = [p for p in self.out.iterdir() if not p.name.startswith(".")]
            if foreign and path.exists():  # a concurrent shard created it meanwhile
                meta = _read_atlas_json(path)
            elif foreign:
                raise GalleryError(
                    f"The folder {self.out} is not empty and is not an fvdesk atlas (it has no {ATLAS_JSON}); "
                    "choose a new or empty folder."
                )
        if meta is None:
            return None
        sha = meta.get("model", {}).get("sha256")
        if sha != self.info.sha256:
            raise GalleryError(
                f"The atlas folder {self.out} belongs to a different model ({meta.get('model', {}).get('file')}) "
                f"than {self.info.file}; choose another folder."
            )
        old = _meta_comparable(meta)
        if old != self.want and not self.force:
            raise AtlasSettingsMismatch(
                f"The atlas in {self.out} was rendered with other settings ({_diff(old, self.want)}); "
                "use the same options, another --out folder, or --force to re-render with the new ones."
            )
        return meta

    def _write_atlas_json(self, meta: dict[str, Any] | None) -> None:
        from fvdesk import __version__

        now = _now()
        layers = {d["name"]: d for d in (meta or {}).get("layers", [])}
        for layer in self.plan:
            layers[layer.name] = layer.to_dict()
        data = {
            "format": ATLAS_FORMAT,
            "version": ATLAS_VERSION,
            "fvdesk_version": __version__,
            "model": self.info.to_dict(),
            "objective": self.objective,
            "settings": self.settings.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "created": (meta or {}).get("created", now),
            "updated": now,
            "layers": sorted(layers.values(), key=lambda d: (d.get("index", 0), d["name"])),
        }
        try:
            atomic_write_text(
                self.out / ATLAS_JSON, json.dumps(data, indent=1, ensure_ascii=False) + "\n"
            )
        except OSError as e:
            raise GalleryError(
                f"Cannot write {self.out / ATLAS_JSON}: {e.strerror or e}."
            ) from None


def _meta_comparable(meta: Mapping[str, Any]) -> dict[str, Any]:
    return comparable(meta.get("settings", {}), meta.get("preprocessing"), meta.get("objective"))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _read_atlas_json(path: Path) -> dict[str, Any]:
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise GalleryError(f"Cannot read {path}: {e.strerror or e}.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GalleryError(f"The atlas manifest {path} is corrupt (not valid JSON: {e}).") from None
    if not isinstance(data, dict) or data.get("format") != ATLAS_FORMAT:
        raise GalleryError(f"{path} is not an fvdesk atlas manifest.")
    if not isinstance(data.get("version"), int) or data["version"] > ATLAS_VERSION:
        raise GalleryError(f"The atlas manifest {path} has a version this fvdesk cannot read.")
    return data


# ------------------------------------------------------------------------------------------------
# Merge and the top-level index
# ------------------------------------------------------------------------------------------------
def atlas_layers(out: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The layers of an atlas: those in ``atlas.json`` plus any gallery sub-folder it misses."""
    root = Path(out)
    meta = _read_atlas_json(root / ATLAS_JSON) if (root / ATLAS_JSON).exists() else {}
    layers = {d["folder"]: dict(d) for d in meta.get("layers", [])}
    with contextlib.suppress(OSError):
        for p in sorted(root.iterdir()):
            if p.is_dir() and p.name not in layers and is_gallery(p):
                ro = Gallery.open(p, None, create=False)
                layers[p.name] = {"name": ro.title or p.name, "folder": p.name, "units": None}
    return sorted(layers.values(), key=lambda d: (d.get("index", 1 << 30), d["folder"]))


def merge_atlas(out: str | os.PathLike[str]) -> AtlasSummary:
    """Fold every layer's shard manifests and rebuild all indexes (run after all shards finished)."""
    root = Path(out)
    if not root.is_dir():
        raise GalleryError(f"The atlas folder {root} does not exist.")
    if not (root / ATLAS_JSON).exists() and not any(
        is_gallery(p) for p in root.iterdir() if p.is_dir()
    ):
        raise GalleryError(f"The folder {root} is not an fvdesk atlas (it has no {ATLAS_JSON}).")
    layers = atlas_layers(root)
    units = 0
    for d in layers:
        folder = root / d["folder"]
        if is_gallery(folder):
            units += len(merge_gallery(folder).items)
    write_atlas_index(root)
    return AtlasSummary(len(layers), units)


def write_atlas_index(out: str | os.PathLike[str]) -> Path:
    """``DIR/index.html``: every layer with its progress, a link to its gallery and thumbnails."""
    root = Path(out)
    meta = _read_atlas_json(root / ATLAS_JSON) if (root / ATLAS_JSON).exists() else {}
    rows = []
    total_done = total_units = 0
    for d in atlas_layers(root):
        folder = root / d["folder"]
        items: list[GalleryItem] = []
        if is_gallery(folder):
            with contextlib.suppress(GalleryError):
                items = [it for it, _ in read_gallery(folder, images=False)[1]]
        n = d.get("units")
        total_done += len(items)
        total_units += n or len(items)
        href = urllib.parse.quote(d["folder"])
        thumbs = "".join(
            f'<img src="{href}/{esc(urllib.parse.quote(it.file))}" title="{esc(f"{it.layer}:{it.unit}")}" loading="lazy">'
            for it in items[:_THUMBS]
        )
        shape = format_shape(d.get("shape") or [None])
        rows.append(
            f'<tr><td><a href="{href}/index.html">{esc(str(d["name"]))}</a></td><td>{esc(str(d.get("op", "")))}</td>'
            f"<td>{esc(shape)}</td><td>{len(items)}/{n if n is not None else '?'}</td><td class=t>{thumbs}</td></tr>"
        )
    model = meta.get("model", {})
    settings = dict(meta.get("settings", {}))
    if isinstance(meta.get("preprocessing"), dict):
        settings["preprocessing"] = {
            k: v for k, v in meta["preprocessing"].items() if k != "source"
        }
    intro = (
        f"{model_line(model)}: {total_done} of {total_units} units rendered; objective "
        f"{esc(str(meta.get('objective', '?')))}; updated {esc(str(meta.get('updated', '')))}."
    )
    body = (
        "<table><tr><th>layer</th><th>op</th><th>shape</th><th>units</th><th></th></tr>\n"
        + "\n".join(rows)
        + "\n</table>"
    )
    title = f"Atlas of {model.get('file', '?')}"
    html_page = page(
        title, "atlas", intro, table((k, text_of(v)) for k, v in settings.items()), body
    )
    try:
        atomic_write_text(root / INDEX, html_page)
    except OSError as e:
        raise GalleryError(f"Cannot write {root / INDEX}: {e.strerror or e}.") from None
    return root / INDEX
