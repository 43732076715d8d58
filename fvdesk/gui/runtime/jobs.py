"""The job controller: what the user asks to render becomes core jobs, tiles and progress.

A request (double-click, a layer's menu, the combination dock) becomes a core ``JobSpec``
(``UnitJob``, ``CombinationJob``); the model session turns it into a ``Job`` that captures the
settings, preprocessing and labels in force; the job runs on the render thread through the core's
``run_job`` and one drive loop.  The controller makes one tile per ``Slot`` of the spec and routes
every event to tiles by the event's own ``slots`` and every result by its ``slot``: no unit/facet
arithmetic here.  Events are told apart with ``isinstance`` on the core's event classes.  Each
task is submitted with the controller's own ``TaskSink``, so only its own tasks reach it.

How a slot looks (layer, unit, kind, caption, label, whether the job is a strip of its own) is
the core's ``fvdesk.core.optim.presentation``: tiles show the views the runner files its results
under, so a tile is captioned as its saved gallery item.  A new job kind registers its view there
(``register_view``) and its plan or runner in ``fvdesk.core.jobs.run``; ``submit(spec)`` then
gives it tiles, routing, progress and galleries.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from collections.abc import Callable
from typing import Any

from fvdesk.core.optim.events import NoticeEvent, PreviewEvent, StepEvent, UnitDoneEvent
from fvdesk.core.optim.jobs import JobSpec, Slot, UnitJob
from fvdesk.core.optim.presentation import SlotView, job_views, register_view, slot_view
from fvdesk.gui.canvas.tiles import CANCELLED, DONE, FAILED, QUEUED, RUNNING, Tile, to_qimage
from fvdesk.gui.runtime.controller import Controller
from fvdesk.gui.runtime.worker import Task, TaskSink, error_text

log = logging.getLogger(__name__)

#: Deprecated: ``describe(spec, slot, label_of) -> dict`` of ``Tile`` fields (``register_tiles``).
TileDescriber = Callable[[Any, Slot, Callable[[str, int], "str | None"]], dict[str, Any]]


def register_tiles(spec_type: type[JobSpec], describe: TileDescriber) -> None:
    """Deprecated: register a ``presentation.register_view`` describer instead (the core's
    view is what results are saved under, so the tile and the gallery agree)."""
    warnings.warn(
        "qt_jobs.register_tiles is deprecated; use fvdesk.core.optim.presentation.register_view",
        DeprecationWarning,
        stacklevel=2,
    )

    def view(spec: Any, slot: Slot, label_of: Callable[[str, int], str | None]) -> SlotView:
        d = describe(spec, slot, label_of)
        return SlotView(slot.index, str(d.get("layer", "")), int(d.get("unit", slot.unit)),
                        slot.facet, str(d.get("kind", spec.type)),
                        bool(getattr(spec, "negative", False)), str(d.get("caption", "")),
                        d.get("label"), bool(d.get("strip", False)))  # fmt: skip

    register_view(spec_type, view)


def view_fields(view: SlotView, spec: JobSpec, *, row: int = 0) -> dict[str, Any]:
    """The ``Tile`` fields of a slot's core view: shown as is; a strip's tiles get ``row``."""
    return {"layer": view.layer, "unit": view.unit, "kind": view.kind, "caption": view.caption,
            "label": view.label, "facet": view.facet, "negative": view.negative, "spec": spec,
            "slot": view.slot, "row": row if view.strip else 0}  # fmt: skip


def tile_fields(
    spec: JobSpec, slot: Slot, label_of: Callable[[str, int], str | None], *, row: int = 0
) -> dict:
    """The ``Tile`` fields of one slot of ``spec`` (its core view, ``view_fields``)."""
    return view_fields(slot_view(spec, slot, label_of), spec, row=row)


#: action key -> what ``render_refs`` does with the tree's selection
RENDER_COMMANDS = {"render_selected": "selection", "render_facets": "facets",
                   "render_negative": "negative", "render_first": "first", "render_all": "all",
                   "deepdream": "deepdream"}  # fmt: skip


class JobController(Controller):
    """Render requests -> core jobs on the render thread -> tiles."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tasks: dict[int, Task] = {}
        self._slots: dict[int, dict[int, int]] = {}  # task id -> slot -> tile id
        self._batch_total = 0  # images in the jobs since the queue was last idle
        self._batch_jobs: set[int] = set()
        #: ``handler(layer, units, facets) -> bool``: another way to make facets (dataset
        #: clusters); True when it took the request over.
        self.facets_handler: Callable[[str, list[int], int], bool] | None = None
        #: where the render thread delivers this controller's tasks (and only those)
        self.sink = TaskSink(event=self._on_event, finished=self._on_finished,
                             failed=self._on_failed, dropped=self._on_dropped,
                             started=self._on_started)  # fmt: skip
        self.session.changed.connect(self._on_model_changed)

    # -- settings -----------------------------------------------------------------------------
    def unit_kind(self, layer: str) -> str:
        """The objective for units of ``layer``: the dock's class objective on the logits."""
        graph = self.session.model.graph
        graph[layer]  # unknown names raise a RenderError with suggestions
        return str(self.ui()["class_kind"]) if graph.logits_name == layer else "channel"

    # -- the actions it handles (the window's wiring loop) -------------------------------------
    def commands(self, refs: Callable[[], list[Any]], parent: Any) -> dict[str, Callable[[], Any]]:
        def on_refs(what: str) -> Callable[[], None]:
            return lambda: self.render_refs(refs(), what)

        out = {key: on_refs(what) for key, what in RENDER_COMMANDS.items()}
        out.update(clear_tiles=self.clear_tiles, cancel_all=self.queue.cancel_all)
        return out

    def enabled(self, has_model: bool, refs: list[Any]) -> dict[str, bool]:
        unit_sel = has_model and any(r.kind == "unit" for r in refs)
        layer_sel = has_model and any(r.layer is not None for r in refs)
        dream_sel = has_model and any(r.layer is not None and r.layer.dreamable for r in refs)
        busy = self.queue.busy()
        return {"render_selected": unit_sel or layer_sel, "render_facets": unit_sel,
                "render_negative": unit_sel, "render_first": layer_sel, "render_all": layer_sel,
                "deepdream": dream_sel, "cancel": busy, "cancel_all": busy}  # fmt: skip

    # -- submission ---------------------------------------------------------------------------
    def submit(
        self, spec: JobSpec, *, overrides: dict[str, Any] | None = None, title: str = ""
    ) -> Task | None:
        """Queue ``spec`` with the dock's settings (``overrides`` for this job only): one tile
        per slot.  Returns the queued task, or None when it could not be built (error shown)."""
        session = self.session
        if session.model is None:
            return None
        try:
            settings = self.settings()
            if overrides:
                settings = dataclasses.replace(settings, **overrides)
            job = session.job_for(spec, settings, title=title)
        except Exception as exc:  # noqa: BLE001 - settings or spec rejected
            self.error.emit("Cannot Render", error_text(exc))
            return None
        model = session.model
        task = Task(job.title, lambda cancel: _run(model, job, cancel), job=job, model=model,
                    sink=self.sink)  # fmt: skip
        tiles = []
        for view in job_views(job, model.graph):
            t = Tile(**view_fields(view, spec, row=task.id))
            t.job_id = task.id
            t.settings = settings.to_dict()
            t.model_name = t.model_file = model.name
            t.model_sha = model.sha256
            t.steps = settings.steps
            tiles.append(t)
        self.tiles.add(tiles)
        self._slots[task.id] = {t.slot: t.id for t in tiles}
        self._tasks[task.id] = task
        self._batch_jobs.add(task.id)
        self._batch_total += len(tiles)
        self.queue.submit(task)
        n = len(tiles)
        self.message.emit(f"Queued {job.title} ({n} image{'s' if n != 1 else ''}).", False)
        self._update_progress()
        return task

    def render_units(
        self,
        layer: str,
        units: list[int],
        *,
        negative: bool = False,
        facets: int = 1,
        kind: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> Task | None:
        """Units of a layer, ``facets`` diverse images each."""
        if self.session.model is None or not units:
            return None
        handler = self.facets_handler
        if (
            facets > 1
            and not negative
            and kind is None
            and handler
            and handler(layer, units, facets)
        ):
            return None
        try:
            kind = kind or self.unit_kind(layer)
            spec = UnitJob(layer, tuple(units), kind=kind, negative=negative, facets=max(1, facets))
        except Exception as exc:  # noqa: BLE001 - a bad request is a message, never a crash
            self.error.emit("Cannot Render", error_text(exc))
            return None
        return self.submit(spec, overrides=overrides)

    def render_layer(self, layer: str, count: int) -> Task | None:
        return self.render_units(layer, list(range(count)))

    def render_deepdream(self, layer: str, overrides: dict[str, Any] | None = None) -> Task | None:
        if self.session.model is None:
            return None
        return self.submit(UnitJob(layer, kind="deepdream"), overrides=overrides)

    def render_refs(self, refs: list[Any], what: str = "selection") -> None:
        """A command on tree rows (``RowRef``s).  ``selection``: the units (one job per layer),
        and the first N units of each layer; ``facets``/``negative``: each unit;
        ``first``/``all``/``deepdream``: each layer (of a row or of a unit)."""
        ui = self.ui()
        units = [r for r in refs if r.kind == "unit"]
        if what in ("facets", "negative"):
            for r in units:
                self.render_units(r.layer.name, [r.unit], negative=what == "negative",
                                  facets=int(ui["facets"]) if what == "facets" else 1)  # fmt: skip
            return
        by_layer: dict[str, list[int]] = {}
        if what == "selection":
            for r in units:
                by_layer.setdefault(r.layer.name, []).append(r.unit)
            refs = [r for r in refs if r.kind == "layer"]
        for name, picked in by_layer.items():
            self.render_units(name, sorted(set(picked)))
        for layer in dict.fromkeys(r.layer for r in refs if r.layer is not None):
            n = max(0, layer.channels)
            if what == "deepdream":
                if layer.dreamable:
                    self.render_deepdream(layer.name)
                else:
                    self.message.emit(f"DeepDream needs a feature map; {layer.name} is not.", True)
            else:
                self.render_layer(layer.name, n if what == "all" else min(int(ui["first_n"]), n))

    def render_again(self, tile: Tile) -> Task | None:
        """The tile's image again with the next seed: its unit alone, the rest of its job as it
        was (the dock's seed is left alone)."""
        spec = tile.spec
        if spec is None:
            return None
        seed = int(tile.settings.get("seed", self._values().get("seed", 0)) or 0) + 1
        if isinstance(spec, UnitJob):
            units = spec.units if tile.unit < 0 else (tile.unit,)
            spec = dataclasses.replace(spec, units=units, facets=1)
        elif hasattr(spec, "facets"):
            spec = dataclasses.replace(spec, facets=1)
        return self.submit(spec, overrides={"seed": seed % (2**31 - 1)})

    # -- cancelling and removing ----------------------------------------------------------------
    def task_of(self, tile: Tile) -> Task | None:
        return self._tasks.get(tile.job_id)

    def remove_tiles(self, ids: set[int]) -> None:
        """Remove tiles; a job whose tiles are all gone is cancelled."""
        removed = self.tiles.remove(ids)
        for task_id in {t.job_id for t in removed}:
            task = self._tasks.get(task_id)
            if task is not None and not self._job_tiles(task):
                self.queue.cancel_job(task)

    def clear_tiles(self) -> None:
        self.queue.cancel_all()
        self.tiles.clear()

    def _on_model_changed(self, model: Any) -> None:
        """Renders of the previous model are cancelled; its finished tiles stay."""
        for task in list(self._tasks.values()):
            if task.model is not model:
                self.queue.cancel_job(task)

    # -- events -> tiles ----------------------------------------------------------------------
    def _tile(self, task: Task, slot: int) -> Tile | None:
        tid = self._slots.get(task.id, {}).get(int(slot))
        return self.tiles.tile(tid) if tid is not None else None

    def _job_tiles(self, task: Task) -> list[Tile]:
        found = (self.tiles.tile(i) for i in self._slots.get(task.id, {}).values())
        return [t for t in found if t is not None]

    def _live(self, task: Task, slots: Any) -> list[tuple[int, Tile]]:
        """(position in the batch, tile) of a batch event's images whose tiles still render."""
        out = []
        for i, s in enumerate(slots or ()):
            t = self._tile(task, s)
            if t is not None and t.state in (QUEUED, RUNNING):
                out.append((i, t))
        return out

    def _on_started(self, task: Task) -> None:
        self._update_progress()

    def _on_event(self, task: Task, ev: Any) -> None:
        if isinstance(ev, StepEvent):
            for i, t in self._live(task, ev.slots):
                changed = t.state != RUNNING
                t.state, t.step, t.steps = RUNNING, int(ev.step), int(ev.steps)
                if i < len(ev.values):
                    t.value = float(ev.values[i])
                self.tiles.update(t, state_changed=changed)
            self._update_progress(ev)
        elif isinstance(ev, PreviewEvent):
            for i, t in self._live(task, ev.slots):
                t.state = RUNNING
                t.image = to_qimage(ev.images[i])
                self.tiles.update(t)
        elif isinstance(ev, UnitDoneEvent):
            self._apply_result(task, ev.result)
        elif isinstance(ev, NoticeEvent):
            self.message.emit(f"{task.title}: {ev.message}", True)

    def _apply_result(self, task: Task, result: Any) -> None:
        t = self._tile(task, result.slot)
        if t is None:
            return
        t.result = result
        t.array = result.image
        t.image = to_qimage(result.image)
        t.value = float(result.value) if result.value is not None else None
        t.dead = bool(result.dead)
        t.caption, t.label = result.caption, result.label  # what a gallery saves
        planned = int(task.job.settings.steps)
        t.step = int(result.steps)
        if result.cancelled:
            # The engine hands back the image as it was when cancelled: keep it, but say so.
            t.state = CANCELLED
            t.message = f"cancelled at step {result.steps} of {planned}"
        else:
            t.steps = int(result.steps) or planned
            t.state = DONE
        self.tiles.update(t, state_changed=True)

    def _close(self, task: Task, state: str, message: str = "") -> None:
        for t in self._job_tiles(task):
            if t.state in (QUEUED, RUNNING):
                t.state = state
                t.message = message
                self.tiles.update(t, state_changed=True)
        self._slots.pop(task.id, None)
        self._tasks.pop(task.id, None)
        if not self.queue.busy():
            self._batch_jobs.clear()
            self._batch_total = 0
        self._update_progress()

    def _on_finished(self, task: Task, outcome: Any) -> None:
        for r in outcome.results:
            t = self._tile(task, r.slot)
            if t is not None and t.state in (QUEUED, RUNNING):
                self._apply_result(task, r)
        if task.model is self.session.model:
            self.session.note_device(outcome.device)  # the engine moved the model there
        verb = "Cancelled" if outcome.cancelled else "Finished"
        self.message.emit(f"{verb} {task.title} in {outcome.seconds:.1f} s.", True)
        self._close(task, CANCELLED)

    def _on_failed(self, task: Task, message: str, _exc: object) -> None:
        self.message.emit(f"Failed {task.title}: {message}", True)
        self._close(task, FAILED, message)

    def _on_dropped(self, task: Task) -> None:
        self._close(task, CANCELLED)

    def _update_progress(self, ev: Any = None) -> None:
        if not self._batch_total:
            return
        done = 0.0
        active = [t for t in self.tiles.tiles() if t.job_id in self._batch_jobs]
        for t in active:
            done += 1 if t.finished else t.progress if t.state == RUNNING else 0
        gone = self._batch_total - len(active)  # tiles removed meanwhile
        frac = min(1.0, (done + max(0, gone)) / self._batch_total)
        task = self.queue.current
        text = ""
        if task is not None and task.id in self._tasks:
            step = f" · step {ev.step}/{ev.steps}" if isinstance(ev, StepEvent) else ""
            queued = len(self.queue.pending())
            more = f" · {queued} queued" if queued else ""
            text = f"Rendering {task.title}{step}{more}"
        self.progress.emit(frac, text)


def _run(model: Any, job: Any, cancel: Any) -> Any:
    """The job's generator; called on the render thread (the engine imports torch)."""
    from fvdesk.core.jobs.run import run_job

    return run_job(model, job, cancel)
