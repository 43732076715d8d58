"""The gallery controller: saving tiles as galleries, opening galleries as tiles, and atlases.

Saving writes through the core's ``write_gallery`` with items made by ``GalleryItem.from_result``,
so an item saved from the app carries the job's full provenance record and
``fvdesk render --from GALLERY --item N`` reproduces it.  Writes run on a background thread that
is *not* abandonable: quitting waits for them, so a gallery is never left half-written.  Opening
reads on a background thread and shows the items as finished tiles (described by their own
provenance, like live tiles).

"Atlas of selected layers" drives the core ``Atlas`` (resumable, one gallery per layer) on the
render thread — it needs the model, like any render — through the same queue and drive loop;
choosing the same folder again resumes it, and the cancel action stops it between batches with
everything finished kept.

Extension point: anything that writes files from tiles (a dataset-examples sheet, a spectrum
export) belongs here, as a method that runs its writer in a non-abandonable ``BackgroundCall``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal

from fvdesk.core.errors import FvdeskError
from fvdesk.core.jobs.job import recorded_spec
from fvdesk.core.jobs.presentation import slot_view
from fvdesk.core.model.graph import short_name
from fvdesk.core.optim.events import NoticeEvent, StepEvent
from fvdesk.core.output import gallery as gal
from fvdesk.core.output.atlas import (
    Atlas,
    AtlasSettingsMismatch,
    LayerStarted,
    Todo,
    UnitCommitted,
    plan_atlas,
)
from fvdesk.gui.canvas.tiles import DONE, Tile, to_qimage
from fvdesk.gui.runtime.controller import Controller
from fvdesk.gui.runtime.jobs import view_fields
from fvdesk.gui.runtime.worker import BackgroundCall, Task, TaskSink, error_text


def _atlas_run(atlas: Atlas) -> Generator[Any, None, Any]:
    """Prepare (checks the folder, finds what is done) and run an atlas: on the render thread."""
    todo = atlas.prepare()
    yield todo
    return (yield from atlas.run())


#: Rows of reopened strips (a spectrum, an interpolation): negative, so they never meet the rows
#: of live jobs (their task ids), and new for every gallery opened.
_OPENED_ROWS = itertools.count(-1, -1)


def strip_rows(items: list[gal.GalleryItem]) -> list[int]:
    """One row per job the items were rendered by (its spec and seed), so the images of a saved
    spectrum or interpolation come back as the strip they were."""
    rows: dict[str, int] = {}
    out = []
    for item in items:
        out.append(rows.setdefault(item.provenance.strip_key(), next(_OPENED_ROWS)))
    return out


def tile_of_item(item: gal.GalleryItem, image: Any, model: dict[str, Any], *, row: int = 0) -> Tile:
    """A finished tile for a saved item: laid out by its job's core view (a strip's tiles get
    ``row``), captioned and labelled as it was saved."""
    prov = item.provenance
    fields: dict[str, Any] = {"layer": item.layer, "unit": item.unit, "kind": item.objective}
    try:
        spec = recorded_spec(prov)
        fields = view_fields(slot_view(spec, spec.slots()[prov.slot or 0]), spec, row=row)
    except (FvdeskError, IndexError):  # a version-1 item, or a job this fvdesk does not know
        pass
    fields.update(caption=item.display_caption, label=item.label, facet=item.facet,
                  negative=item.negative)  # fmt: skip
    steps = int(item.steps or 0)
    t = Tile(**fields, state=DONE, value=item.value, image=to_qimage(image), array=image,
             result=item, settings=item.settings, dead=item.dead, steps=steps, step=steps)  # fmt: skip
    t.model_name = t.model_file = str(model.get("file", ""))
    t.model_sha = str(model.get("sha256", ""))
    return t


@dataclass
class _AtlasRun:
    """One atlas task's folder, layers and progress (its sink's state)."""

    folder: Path
    layers: list[str]
    done: int = 0
    total: int = 1
    layer: str = ""


class GalleryController(Controller):
    """Galleries and atlases: the app's writers and readers of folders."""

    saved = Signal(str)
    opened = Signal(str)
    read = Signal(object)  # the opened gallery's [(GalleryItem, image)], for other views to reuse
    saving_changed = Signal(bool)
    atlas_finished = Signal(str)

    def __init__(self, *args: Any, confirm: Callable[[str, str], bool], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._confirm = confirm  # ask the user a yes/no question (title, text)
        self._saving: BackgroundCall | None = None
        self.atlas: Task | None = None  # the atlas queued or running (the latest one asked for)

    def enabled(self, has_model: bool, refs: list[Any]) -> dict[str, bool]:
        """Save Gallery and Atlas (their commands are the window's: they ask for a folder)."""
        return {"save_gallery": not self.is_saving() and bool(self.savable_tiles()),
                "atlas": has_model and any(r.layer is not None for r in refs)}  # fmt: skip

    # -- saving -------------------------------------------------------------------------------
    def is_saving(self) -> bool:
        return self._saving is not None

    def savable_tiles(self) -> list[Tile]:
        """Finished tiles of one model: the open one, else the model of the first tile."""
        done = [t for t in self.tiles.tiles() if t.state == DONE and t.array is not None]
        if not done:
            return []
        model = self.session.model
        sha = model.sha256 if model is not None else done[0].model_sha
        if not any(t.model_sha == sha for t in done):
            sha = done[0].model_sha
        return [t for t in done if t.model_sha == sha]

    def save_gallery(self, folder: str | Path) -> BackgroundCall | None:
        """Write the finished tiles through the core's gallery writer, on a background thread
        the app waits for when it quits."""
        tiles = self.savable_tiles()
        if not tiles:
            return None
        first = tiles[0]
        info = gal.ModelInfo(first.model_file or first.model_name, first.model_sha)
        pairs = []
        for t in tiles:  # two tiles of one key are both kept: the gallery's duplicate-key rule
            item = t.result
            if not isinstance(item, gal.GalleryItem):
                item = gal.GalleryItem.from_result(item, device=item.provenance.device or "")
            pairs.append((item, t.array))
        title = f"{info.file} — {len(pairs)} renders"
        device = pairs[0][0].device
        folder = Path(folder)

        def job(progress: Callable[[float, str], None]) -> Path:
            return gal.write_gallery(
                folder,
                info,
                pairs,  # type: ignore[arg-type]  # tiles offered for saving have images
                title=title,
                device=device,
                progress=progress,
            )

        call = BackgroundCall(job, name="fvdesk-save", abandonable=False)
        call.progress.connect(lambda f, text: self.progress.emit(f, text))
        call.done.connect(lambda path: self._saved(path, len(pairs)))
        call.failed.connect(lambda message, exc: self._save_failed(message))
        self._saving = call
        self.saving_changed.emit(True)
        self.message.emit(f"Saving gallery to {folder}…", True)
        call.start()
        return call

    def _saved(self, path: Path, n: int) -> None:
        self._saving = None
        self.saving_changed.emit(False)
        self.message.emit(
            f"Saved a gallery of {n} images to {path} (index.html, contact_sheet.png, "
            "gallery.json).",
            True,
        )
        self.saved.emit(str(path))

    def _save_failed(self, message: str) -> None:
        self._saving = None
        self.error.emit("Cannot Save Gallery", message)  # before a quit that waited for it
        self.saving_changed.emit(False)

    # -- opening ------------------------------------------------------------------------------
    def open_gallery(self, folder: str | Path) -> BackgroundCall:
        """Read a saved gallery (off the GUI thread) and add its images as finished tiles."""
        folder = Path(folder)
        call = BackgroundCall(
            lambda progress: gal.read_gallery(folder, progress=progress),
            name="fvdesk-open-gallery",
        )
        call.progress.connect(lambda f, text: self.progress.emit(f, text))
        call.done.connect(lambda value: self._on_read(folder, value))
        call.failed.connect(lambda message, exc: self.error.emit("Cannot Open Gallery", message))
        call.start()
        return call

    def _on_read(self, folder: Path, value: Any) -> None:
        manifest, pairs = value
        model = manifest.get("model", {})
        shown = [(item, image) for item, image in pairs if image is not None]
        rows = strip_rows([item for item, _ in shown])
        tiles = [
            tile_of_item(item, image, model, row=row)
            for (item, image), row in zip(shown, rows, strict=True)
        ]
        self.tiles.add(tiles)
        self.message.emit(
            f"Opened the gallery {folder}: {len(tiles)} images of {model.get('file', '?')}.", True
        )
        self.read.emit(shown)
        self.opened.emit(str(folder))

    # -- atlas --------------------------------------------------------------------------------
    def start_atlas(
        self, folder: str | Path, layers: list[str], *, force: bool = False
    ) -> Task | None:
        """Every unit of ``layers`` into ``folder`` (a new folder, or an atlas to resume)."""
        session = self.session
        model = session.model
        if model is None or not layers:
            return None
        try:
            plan = plan_atlas(model, layers=layers)
            settings = self.settings()
            session.check_canvas(settings)
            atlas = Atlas(model, folder, plan, settings, force=force,
                          preprocessing=session.preprocessing, labels=session.labels)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - settings or layers rejected
            self.error.emit("Cannot Start Atlas", error_text(exc))
            return None

        def start(cancel: Any) -> Generator[Any, None, Any]:
            atlas.cancel = cancel
            return _atlas_run(atlas)

        n = len(plan)
        run = _AtlasRun(Path(folder), list(layers))
        sink = TaskSink(event=lambda _t, ev: self._on_event(run, ev),
                        finished=lambda t, summary: self._on_finished(run, t, summary),
                        failed=lambda t, message, exc: self._on_failed(run, t, message, exc),
                        dropped=lambda t: self._on_failed(run, t, "", None))  # fmt: skip
        task = Task(f"atlas of {n} layer{'s' if n != 1 else ''}", start, model=model, sink=sink)
        self.atlas = task
        self.queue.submit(task)
        self.message.emit(f"Queued an {task.title} into {folder}.", True)
        return task

    def _ended(self, task: Task) -> None:
        if task is self.atlas:
            self.atlas = None

    def _on_event(self, run: _AtlasRun, ev: Any) -> None:
        if isinstance(ev, Todo):
            run.total, run.done = max(1, ev.total), ev.skipped
            if ev.skipped:
                self.message.emit(f"Atlas: resuming, {ev.skipped} of {ev.total} units done.", False)
        elif isinstance(ev, UnitCommitted):
            run.done = ev.done
        elif isinstance(ev, LayerStarted):
            run.layer = ev.layer
        elif isinstance(ev, NoticeEvent):
            self.message.emit(f"Atlas: {ev.message}", True)
        if isinstance(ev, (Todo, UnitCommitted, StepEvent, LayerStarted)):
            step = f" · step {ev.step}/{ev.steps}" if isinstance(ev, StepEvent) else ""
            where = f" · {short_name(run.layer)}" if run.layer else ""
            text = f"Atlas {run.done}/{run.total}{where}{step}"
            self.progress.emit(run.done / run.total, text)

    def _on_finished(self, run: _AtlasRun, task: Task, summary: Any) -> None:
        self._ended(task)
        folder = run.folder
        if task.cancel.is_set():
            self.message.emit(
                f"Atlas stopped: {summary.rendered} rendered; choose {folder} again to resume.",
                True,
            )
        else:
            self.message.emit(
                f"Atlas: {summary.rendered} rendered, {summary.skipped} already done, "
                f"{summary.layers} layers in {folder} (open {folder / 'index.html'}).",
                True,
            )
        self.atlas_finished.emit(str(folder))

    def _on_failed(self, run: _AtlasRun, task: Task, message: str, exc: object) -> None:
        self._ended(task)
        if not message:  # dropped from the queue before it started
            self.message.emit("Atlas cancelled before it started.", True)
        elif isinstance(exc, AtlasSettingsMismatch) and self._confirm(
            "Atlas Settings Differ",
            f"{message}\n\nRe-render the units made with other settings, with the current ones?",
        ):
            self.start_atlas(run.folder, run.layers, force=True)
        else:
            self.error.emit("Cannot Make Atlas", message)
