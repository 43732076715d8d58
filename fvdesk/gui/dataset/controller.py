"""The dataset controller: the user's image folder per model and what the app does with it.

It owns the dataset choice (remembered per model in the preferences, by sha256), the colour
matrix estimated from the folder (every job built afterwards carries it, through the session's
settings hooks, so it is in each provenance record), the examples computed so far
(``(layer, measure, x, y) -> LayerExamples``) and the members of dataset-cluster facets.  Its
views are the ``ExamplesPanel`` beside the render and the ``LayerExamplesBrowser``; the window
only docks them and says which tile is current.

The controller is the widgets' ``JobRunner``: passes go through the app's one ``RenderQueue``
(``QueueRunner``), with the session's preprocessing and the dock's device, and their progress
is the controller's ``progress`` signal (with the shared ETA policy), so the status bar and the
Cancel action treat a pass like a render.  Everything is forgotten when another model is opened
or the preprocessing changes (the examples of one are not those of the other).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget

from fvdesk.core.dataset.choice import DatasetChoice
from fvdesk.core.errors import FvdeskError
from fvdesk.core.jobs.job import ClusterJob, ExamplesJob, recorded_spec, unit_caption
from fvdesk.core.optim.events import NoticeEvent, ProgressEvent
from fvdesk.core.optim.kinds import COMPARABLE_KINDS, kind_info, measure_of
from fvdesk.gui.canvas.tiles import Tile
from fvdesk.gui.dataset.browser import LayerExamplesBrowser
from fvdesk.gui.dataset.dialog import DatasetDialog
from fvdesk.gui.dataset.examples import ExamplesPanel
from fvdesk.gui.runtime.controller import Controller
from fvdesk.gui.runtime.runners import DoneFn, EventFn, FailFn, QueueRunner
from fvdesk.gui.runtime.worker import BackgroundCall, error_text

NO_DATASET = (
    "Choose a dataset (File > Dataset…, an image folder) to see the images each unit of a "
    "render responds to."
)
Key = tuple[str, str, int | None, int | None]  # layer, measure, x, y


def __getattr__(name: str) -> Any:
    if name == "COMPARABLE":  # which values are the pass's measure is the core's vocabulary now
        warnings.warn("qt_dataset.COMPARABLE is deprecated; use "
                      "fvdesk.core.optim.kinds.COMPARABLE_KINDS", DeprecationWarning, stacklevel=2)  # fmt: skip
        return COMPARABLE_KINDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class DatasetController(Controller):
    """Dataset choice, colour matrix, examples beside renders, cluster facets, gallery export."""

    choice_changed = Signal(object)  # DatasetChoice | None
    attached = Signal(str, int)  # gallery folder, items given their examples
    browsing = Signal(str)  # the layer browser started on a layer (the window shows it)

    def __init__(self, *args: Any, prefs: Any, jobs: Any, galleries: Any = None,
                 **kwargs: Any) -> None:  # fmt: skip
        super().__init__(*args, **kwargs)
        self.prefs = prefs
        self.jobs = jobs
        self.choice: DatasetChoice | None = None
        self.color_matrix: list[list[float]] | None = None
        self.examples: dict[Key, Any] = {}
        self.members: dict[ClusterJob, list[list[Any]]] = {}
        self._runner = QueueRunner(self.queue, self)
        self._generation = 0  # bumped whenever what is in memory stops being valid
        self._pass: Callable[[], None] | None = None  # cancels the panel's pass
        self._shown: tuple[int, str] | None = None  # (tile id, state) the panel shows
        self._tile: Tile | None = None
        self.panel = ExamplesPanel(self)
        self.panel.setObjectName("examplesPanel")
        self.panel.clear(NO_DATASET)
        self.browser = LayerExamplesBrowser(self)
        self.browser.setObjectName("layerExamples")
        self.browser.examples_ready.connect(self._store_browsed)
        self.browser.unit_selected.connect(self._show_browsed)
        self.browser.unit_activated.connect(lambda layer, u: jobs.render_units(layer, [u]))
        self.browser.failed.connect(lambda msg: self.message.emit(msg, True))
        self.session.changed.connect(self._on_model_changed)
        self.session.choices_changed.connect(self._forget)
        self.session.settings_hooks.append(self._with_matrix)
        jobs.facets_handler = self.render_cluster_facets
        if galleries is not None:
            galleries.saved.connect(self.attach_to_gallery)

    # -- the JobRunner the widgets use ----------------------------------------------------------
    def submit(self, model: Any, job: Any, on_event: EventFn, on_done: DoneFn,
               on_failed: FailFn) -> Callable[[], None]:  # fmt: skip
        """A pass on the render queue, on the dock's device (the job carries the choices it was
        built with: ``session.job_for``, or the browser's ``choices``); its progress goes to the
        status bar."""
        job = job.with_settings(device=str(self._values().get("device") or "auto"))

        def event(ev: Any) -> None:
            # Emitted only once the pass runs (not while queued), so the status bar's time
            # left starts with the pass; it runs on the render queue, as the renders do.
            if isinstance(ev, ProgressEvent) and ev.total:
                text = f"Dataset pass: {ev.done:,}/{ev.total:,} {ev.what}"
                self.progress.emit(ev.done / ev.total, text)
            elif isinstance(ev, NoticeEvent):
                self.message.emit(f"Dataset: {ev.message}", False)
            on_event(ev)

        return self._runner.submit(model, job, event, on_done, on_failed)

    def call(self, fn: Callable[[], Any], on_done: DoneFn, on_failed: FailFn) -> None:
        self._runner.call(fn, on_done, on_failed)

    # -- the actions it handles (the window's wiring loop) -------------------------------------
    def commands(self, refs: Callable[[], list[Any]], parent: Any) -> dict[str, Callable[[], Any]]:
        def browse() -> None:
            layers = list(dict.fromkeys(r.layer.name for r in refs() if r.layer is not None))
            for name in layers[:1]:
                self.browse_layer(name)

        return {"dataset": lambda: self.choose_dialog(parent), "layer_examples": browse}

    def enabled(self, has_model: bool, refs: list[Any]) -> dict[str, bool]:
        dataset = has_model and self.choice is not None
        layer_sel = any(r.layer is not None for r in refs)
        return {"dataset": has_model, "dataset_spectrum": dataset,
                "layer_examples": dataset and layer_sel}  # fmt: skip

    # -- the dataset choice -----------------------------------------------------------------------
    def choose_dialog(self, parent: QWidget | None = None) -> None:
        """File > Dataset…: choose the folder for the open model."""
        model = self.session.model
        if model is None:
            return
        dlg = DatasetDialog(self, self.choice, model_sha256=model.sha256, parent=parent)
        if dlg.exec():
            self.apply_choice(dlg.choice())

    def apply_choice(self, choice: DatasetChoice | None) -> None:
        """The user's choice for the open model: checked off the GUI thread (a folder with no
        images is refused in one sentence and the previous choice kept), then remembered."""
        model = self.session.model
        if model is None:
            return
        if choice is None:
            self.prefs.set_dataset_for(model.sha256, None)
            self.set_dataset(None)
            return

        def scan() -> int:
            from fvdesk.core.imagefolder import scan_folder

            return len(scan_folder(choice.root).images)

        def scanned(n: int) -> None:
            if model is not self.session.model:
                return
            if not n:
                self.error.emit("Cannot Use Dataset", f"The folder {choice.root} holds no images.")
                return
            self.prefs.set_dataset_for(model.sha256, choice.to_dict())
            self.set_dataset(choice)
            self.message.emit(f"Dataset for {model.name}: {choice.root} ({n:,} images).", True)

        self.call(scan, scanned, lambda msg: self.error.emit("Cannot Use Dataset", msg))

    def set_dataset(self, choice: DatasetChoice | None) -> None:
        """Use ``choice`` from now on: what was computed for the previous folder is dropped and,
        with ``colours``, the folder's colour matrix is estimated for the jobs to come."""
        self.choice = choice
        self.color_matrix = None
        self._forget()
        if choice is not None and choice.colours:
            gen = self._generation

            def estimate() -> Any:
                from fvdesk.core.optim.param import color_matrix_from_folder

                return color_matrix_from_folder(choice.root)

            def store(matrix: Any) -> None:
                if gen == self._generation and self.choice is choice:
                    self.color_matrix = matrix
                    self.message.emit(f"Colour decorrelation from {choice.root}.", False)

            self.call(estimate, store, lambda msg: self.error.emit("Cannot Use Dataset", msg))
        self.choice_changed.emit(choice)

    def use_spectrum(self, choose: Callable[[str], None]) -> None:
        """MACO's spectrum from the dataset folder (``choose`` sets the settings dock's field)."""
        if self.choice is not None:
            choose(self.choice.root)
            self.message.emit(f"MACO spectrum: the mean spectrum of {self.choice.root}.", True)

    def _with_matrix(self, settings: Any) -> Any:
        if self.color_matrix is None or settings.color_matrix is not None:
            return settings
        return dataclasses.replace(settings, color_matrix=self.color_matrix)

    def _on_model_changed(self, model: Any) -> None:
        choice = DatasetChoice.from_dict(self.prefs.dataset_for(model.sha256)) if model else None
        self._tile = None
        self.browser.cancel()
        self.set_dataset(choice)

    def _forget(self) -> None:
        self._generation += 1
        self.examples.clear()
        self.members.clear()
        if self._pass is not None:
            self._pass()
            self._pass = None
        self._shown = None
        self.show_tile(self._tile)

    # -- the panel beside the render ------------------------------------------------------------
    def refresh(self, tile: Tile | None) -> None:
        """The current tile again, when it changed state (e.g. its render finished)."""
        if tile is not None and self._shown != (tile.id, tile.state):
            self.show_tile(tile)

    def show_tile(self, tile: Tile | None) -> None:
        """Show the current tile's unit in the panel (running the pass if needed)."""
        self._tile = tile
        if self.choice is None or self.session.model is None:
            self._shown = None
            self.panel.clear(NO_DATASET)
            return
        if tile is None:
            self._shown = None
            self.panel.clear("Select a render to see its unit's dataset examples.")
            return
        self._shown = (tile.id, tile.state)
        model = self.session.model
        if (
            tile.unit < 0
            or tile.model_sha not in ("", model.sha256)
            or tile.layer not in model.graph
        ):
            text = "Dataset examples are per unit of the open model."
            self.panel.clear(text if tile.unit >= 0 else "Dataset examples are per unit.")
            return
        measure, x, y = measure_of(tile.kind, tile.spec)
        self.examples_for(tile.layer, measure, x, y, lambda le: self._show(tile, le))

    def _show(self, tile: Tile, le: Any) -> None:
        if tile is not self._tile or self.choice is None:
            return
        if not 0 <= tile.unit < le.units:
            self.panel.clear(f"{tile.layer} has no unit {tile.unit} in the dataset pass.")
            return
        ux = le.unit(tile.unit, top=self.choice.top, bottom=self.choice.bottom)
        members = self.members.get(tile.spec) if isinstance(tile.spec, ClusterJob) else None
        if members is not None and tile.facet < len(members):
            ux = dataclasses.replace(ux, top=list(members[tile.facet][: self.choice.top]))
        value = tile.value if kind_info(tile.kind).comparable else None
        label = f" ({tile.label})" if tile.label else ""
        self.panel.show_unit(ux, render_value=value, title=f"<b>{tile.caption}{label}</b>")

    def examples_for(self, layer: str, measure: str, x: int | None, y: int | None,
                     then: Callable[[Any], None], *, pool: int = 0,
                     panel: bool = True) -> None:  # fmt: skip
        """``then(LayerExamples)`` once the pass for ``layer`` is in memory (at least ``pool``
        examples per unit).  For the ``panel`` only the latest request matters: an older pass
        still running is cancelled when the user moves on."""
        choice, model = self.choice, self.session.model
        key = (layer, measure, x, y)
        have = self.examples.get(key)
        if have is not None and have.k >= pool:
            then(have)
            return
        if choice is None or model is None:
            return
        if panel and self._pass is not None:
            self._pass()
        gen = self._generation
        top = max(choice.top, pool)
        spec = ExamplesJob(choice.root, (layer,), kind=measure, x=x, y=y, top=top,
                           bottom=choice.bottom)  # fmt: skip
        if panel:
            self.panel.clear(f"Reading {choice.root} for {layer} …")

        def done(result: Any) -> None:
            if gen != self._generation:
                return
            if panel:
                self._pass = None
            if result.cancelled:
                if panel:
                    self.panel.clear("The dataset pass was cancelled; select the render to resume.")
                return
            self.examples[key] = result.layers[layer]
            then(result.layers[layer])

        def failed(message: str) -> None:
            if gen == self._generation:
                if panel:
                    self._pass = None
                    self.panel.clear(message)
                self.message.emit(f"Dataset examples: {message}", True)

        try:
            job = self.session.job_for(spec, self.settings())
        except Exception as exc:  # noqa: BLE001 - a rejected setting is a message, never a crash
            failed(error_text(exc))
            return
        cancel = self.submit(model, job, lambda _e: None, done, failed)
        if panel:
            self._pass = cancel

    # -- the examples-only browser ----------------------------------------------------------------
    def browse_layer(self, layer: str) -> None:
        """Every unit of ``layer`` as rows of its top examples, without rendering."""
        if self.session.model is None:
            return
        if self.choice is None:
            self.error.emit("No Dataset", "Choose a dataset first (File > Dataset…).")
            return
        labels = lambda u: self.session.unit_label(layer, u)  # noqa: E731
        self.browser.run(self.session.model, layer, self.choice, labels=labels,
                         choices=self.session.choices)  # fmt: skip
        self.browsing.emit(layer)

    def _store_browsed(self, result: Any) -> None:
        for name, le in result.layers.items():
            if not result.cancelled:
                self.examples[(name, "channel", None, None)] = le

    def _show_browsed(self, layer: str, unit: int) -> None:
        le = self.browser.layer_examples
        if le is not None and self.choice is not None:
            self._tile = None
            ux = le.unit(unit, top=self.choice.top, bottom=self.choice.bottom)
            label = self.session.unit_label(layer, unit)
            caption = unit_caption(layer, unit)
            self.panel.show_unit(ux, title=f"<b>{caption}{f' ({label})' if label else ''}</b>")

    # -- facets from dataset clusters -------------------------------------------------------------
    def render_cluster_facets(self, layer: str, units: list[int], facets: int) -> bool:
        """With ``ui:cluster_facets`` and a dataset: each unit's facets from clusters of its top
        examples (``jobs.facets_handler``); False leaves the request to the diversity term."""
        model = self.session.model
        if self.choice is None or model is None or not self.ui().get("cluster_facets"):
            return False
        from fvdesk.core.jobs.clusters import DEFAULT_POOL

        def cluster_all(le: Any) -> None:
            for unit in units:
                self._cluster(le, unit, facets)

        self.examples_for(layer, "channel", None, None, cluster_all, pool=DEFAULT_POOL,
                          panel=False)  # fmt: skip
        return True

    def _cluster(self, le: Any, unit: int, facets: int) -> None:
        model, pre, gen = self.session.model, self.session.preprocessing, self._generation
        seed = int(self._values().get("seed", 0) or 0)

        def start(_cancel: Any) -> Any:
            from fvdesk.core.jobs.clusters import cluster_facets

            yield from ()
            return cluster_facets(model, le, unit, facets, pre=pre, seed=seed)

        def done(cl: Any) -> None:
            if gen == self._generation and model is self.session.model:
                self.members[cl.job] = cl.members
                self.jobs.submit(cl.job)

        title = f"clustering the examples of {le.layer}:{unit}"
        self._runner.run(title, start, lambda _e: None, done,
                         lambda msg: self.error.emit("Cannot Cluster Examples", msg), model=model)  # fmt: skip

    # -- galleries --------------------------------------------------------------------------------
    def attach_to_gallery(self, folder: str) -> BackgroundCall | None:
        """After a gallery is saved: its items get their units' examples (those in memory),
        copied into its ``examples/`` folder, on a thread quitting waits for."""
        model = self.session.model
        if model is None or not self.examples:
            return None
        lookup = self._lookup(dict(self.examples), dict(self.members), self.choice)
        pre = {k: v for k, v in self.session.choices.preprocessing.to_dict().items()  # type: ignore[union-attr]  # a model is open (checked above)
               if k != "source"}  # fmt: skip

        def work(_progress: Any) -> int:
            from fvdesk.core.output.examples import attach_examples
            from fvdesk.core.output.gallery import Gallery, ModelInfo

            g = Gallery.open(folder, ModelInfo.from_model(model))
            n = attach_examples(g, lookup, preprocessing=pre)
            g.finalize(prune=True)
            return n

        call = BackgroundCall(work, name="fvdesk-gallery-examples", abandonable=False)
        call.done.connect(lambda n: self._attached(folder, n))
        call.failed.connect(lambda msg, _exc: self.error.emit("Cannot Add Dataset Examples", msg))
        call.start()
        return call

    def _attached(self, folder: str, n: int) -> None:
        if n:
            self.message.emit(f"Added dataset examples to {n} items of {folder}.", True)
        self.attached.emit(folder, n)

    @staticmethod
    def _lookup(examples: dict[Key, Any], members: dict[ClusterJob, Any],
                choice: DatasetChoice | None) -> Callable[[Any], Any]:  # fmt: skip
        """``lookup(item)`` for ``attach_examples``: the examples of an item's unit, or None."""
        from fvdesk.core.output.examples import ItemExamples

        top = choice.top if choice else None
        bottom = choice.bottom if choice else None

        def lookup(item: Any) -> Any:
            try:
                spec = recorded_spec(item.provenance)
            except FvdeskError:  # an item without a readable job: by its fields
                spec = None
            kind = getattr(spec, "kind", item.objective)
            measure, x, y = measure_of(kind, spec)
            le = examples.get((item.layer, measure, x, y))
            if le is None or not 0 <= item.unit < le.units:
                return None
            ux = le.unit(item.unit, top=top, bottom=bottom)
            facets = members.get(spec) if isinstance(spec, ClusterJob) else None
            if facets is not None and item.facet < len(facets):
                return ItemExamples(ux, list(facets[item.facet][:top]))
            return ItemExamples(ux)

        return lookup


__all__ = ["DatasetController", "measure_of"]
