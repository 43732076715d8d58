"""The article's features in the window (issue 10): the regularization spectrum, the
steepest-descent view, directions, interpolations, the neuron-position picker, the combination
builder, and the learned prior's and MACO's files.

Every command builds a core job spec and hands it to ``JobController.submit``: nothing here runs
model work, and tiles, routing, progress and galleries follow as for any job.  The
``CombinationBuilder`` is the one place a pending combination lives; the tree's "Add to
Combination", the picker's neuron terms and the Render/Clear commands all act on it.  Files the
settings dock names are checked on a background thread; a bad one is one sentence and the previous
choice comes back.  Importing this module registers the tiles of the article's job kinds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QDockWidget, QFileDialog, QWidget

from fvdesk.core.jobs.job import JobSpec, Term
from fvdesk.gui.article.combination import CombinationBuilder
from fvdesk.gui.article.direction import DirectionDialog, InterpolationDialog
from fvdesk.gui.article.figures import spectrum_spec, steepest_spec
from fvdesk.gui.article.position import NeuronPositionPicker
from fvdesk.gui.runtime.controller import Controller
from fvdesk.gui.runtime.jobs import JobController
from fvdesk.gui.runtime.selection import RowRef
from fvdesk.gui.runtime.worker import BackgroundCall, Task, error_text
from fvdesk.gui.settings.panel import RenderSettingsPanel

#: The settings dock's files that are checked when chosen: (title of the error, checker).
FILE_TITLES = {"prior": "Cannot Use Generator", "maco_spectrum": "Cannot Use MACO Spectrum"}


def _check_generator(path: str) -> str:
    """Load the generator (kept for the renders that follow); on a background thread."""
    from fvdesk.core.model.generator import generator_for

    return f"Learned prior: {generator_for(path).describe()}"


def _check_spectrum(path: str) -> str:
    """Read (or measure, for a folder) MACO's spectrum; it is cached for the renders."""
    from fvdesk.core.optim.maco import spectrum_for

    spectrum_for(path)
    return f"MACO spectrum: {path}"


def units_of(refs: list[RowRef]) -> list[tuple[str, int]]:
    """(layer, unit) of the unit rows among ``refs``."""
    return [(r.layer.name, r.unit) for r in refs if r.kind == "unit" and r.layer is not None]


def feature_layer(refs: list[RowRef]) -> Any:
    """The first feature-map layer among ``refs`` (a unit row stands for its layer), or None."""
    return next((r.layer for r in refs if r.layer is not None and r.layer.kind == "feature"), None)


def _raise(widget: QWidget) -> None:
    """Show the dock that holds ``widget`` (hidden or behind a tab) where the window put it."""
    dock = widget.parentWidget()
    if isinstance(dock, QDockWidget):
        dock.show()
        dock.raise_()


class ArticleController(Controller):
    """Owns the combination builder and the position picker; submits the article's jobs."""

    combination_changed = Signal()

    def __init__(
        self, *args: Any, jobs: JobController, panel: RenderSettingsPanel, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.jobs = jobs
        self.panel = panel
        self.builder = CombinationBuilder(self._submit_spec)
        self.picker = NeuronPositionPicker(self._submit_spec)
        self.picker.add_to_combination.connect(self.add_neuron)
        self.builder.changed.connect(self.combination_changed)
        self._checks: dict[str, tuple[BackgroundCall, str]] = {}  # key -> (call, path to restore)
        panel.file_chosen.connect(self.check_file)
        self.session.changed.connect(self._on_model_changed)

    # -- the window's commands ------------------------------------------------------------------
    def commands(
        self, refs: Callable[[], list[RowRef]], parent: QWidget
    ) -> dict[str, Callable[[], Any]]:
        """Handlers of the actions table's rows for these features (``refs``: the selection)."""
        return {
            "spectrum": lambda: self._on_one(refs(), self.spectrum),
            "spectrum_combination": self.spectrum_of_combination,
            "steepest": lambda: self._on_one(refs(), self.steepest),
            "pick_position": lambda: self._on_one(refs(), self.pick_position),
            "directions": lambda: self.directions(feature_layer(refs()), parent),
            "interpolate": lambda: self.interpolate(units_of(refs()), parent),
            "open_generator": lambda: self.open_generator(parent),
            "add_combination": lambda: self.add_units(units_of(refs())),
            "render_combination": self.render_combination,
            "clear_combination": self.builder.clear,
        }

    def enabled(self, has_model: bool, refs: list[RowRef]) -> dict[str, bool]:
        """Whether each of those actions applies to the selection now."""
        units = [r for r in refs if r.kind == "unit"]
        one = has_model and len(units) == 1
        combination = has_model and bool(self.builder.terms())
        return {
            "spectrum": one, "steepest": one, "spectrum_combination": combination,
            "pick_position": one and units[0].layer.spatial is not None,  # type: ignore[union-attr]  # a unit ref always has its layer
            "directions": has_model and feature_layer(refs) is not None,
            "interpolate": has_model and len(units) in (1, 2), "open_generator": True,
            "add_combination": has_model and bool(units), "render_combination": combination,
            "clear_combination": bool(self.builder.terms()),
        }  # fmt: skip

    def _on_one(self, refs: list[RowRef], fn: Callable[[str, int], Any]) -> Any:
        units = units_of(refs)
        if len(units) != 1:
            self.error.emit("Select One Unit", "Select one unit in the layer tree.")
            return None
        return fn(*units[0])

    # -- jobs -----------------------------------------------------------------------------------
    def _submit(self, build: Callable[[], JobSpec]) -> Task | None:
        """Submit the spec ``build()`` makes; a rejected one is a message, never a crash."""
        if self.session.model is None:
            return None
        try:
            spec = build()
        except Exception as exc:  # noqa: BLE001 - settings or objective rejected
            self.error.emit("Cannot Render", error_text(exc))
            return None
        return self.jobs.submit(spec)

    def _submit_spec(self, spec: JobSpec) -> Task | None:
        return self._submit(lambda: spec)

    def term(self, layer: str, unit: int, weight: float = 1.0) -> Term:
        """The unit's objective with the dock's class objective on the logits."""
        return Term(layer, int(unit), self.jobs.unit_kind(layer), float(weight))

    def spectrum(self, layer: str, unit: int) -> Task | None:
        """The article's regularization spectrum for one unit: a row of tiles."""
        return self._submit(lambda: spectrum_spec((self.term(layer, unit),), self.settings()))

    def spectrum_of_combination(self) -> Task | None:
        if not self.builder.terms():
            return None
        return self._submit(lambda: spectrum_spec(self.builder.terms(), self.settings()))

    def steepest(self, layer: str, unit: int) -> Task | None:
        """Steepest descent under three metrics: one step, and a full render of each."""
        return self._submit(lambda: steepest_spec((self.term(layer, unit),)))

    def directions(self, layer: Any, parent: QWidget | None) -> Task | None:
        """Ask for directions in ``layer``'s channel space (a ``Layer``) and render them."""
        if layer is None or self.session.model is None:
            return None
        dialog = DirectionDialog(layer.name, layer.channels, parent)
        return self._submit_spec(dialog.result_spec) if dialog.exec() else None

    def interpolate(self, units: list[tuple[str, int]], parent: QWidget | None) -> Task | None:
        """Ask for two objectives (filled in from one or two selected units) and interpolate."""
        if self.session.model is None:
            return None
        ends = [f"{layer}:{unit}" for layer, unit in units[:2]] + ["", ""]
        dialog = InterpolationDialog(ends[0], ends[1], parent, resolve_kind=self.jobs.unit_kind)
        return self._submit_spec(dialog.result_spec) if dialog.exec() else None

    # -- the neuron position and the combination -------------------------------------------------
    def pick_position(self, layer: str, unit: int) -> None:
        """Show ``layer:unit`` in the position picker and bring its dock forward."""
        self.follow(layer, unit)
        _raise(self.picker)

    def follow(self, layer: str, unit: int) -> None:
        """The picker shows the tree's current unit (disabled for layers without positions)."""
        model = self.session.model
        if model is not None and layer in model.graph:
            self.picker.set_unit(layer, unit, model.graph[layer].spatial)

    def follow_refs(self, refs: list[RowRef]) -> None:
        units = units_of(refs)
        if units:
            self.follow(*units[0])

    def add_units(self, units: list[tuple[str, int]], weight: float = 1.0) -> None:
        """Add ``weight`` × each unit to the combination."""
        if self.session.model is None or not units:
            return
        try:
            terms = [self.term(layer, unit, weight) for layer, unit in units]
        except Exception as exc:  # noqa: BLE001 - an unknown layer is a message
            self.error.emit("Cannot Add to Combination", error_text(exc))
            return
        for t in terms:
            self.builder.add_term(t.layer, t.unit, t.kind, t.weight)
        _raise(self.builder)

    def add_neuron(self, layer: str, unit: int, x: int, y: int) -> None:
        """The picker's neuron at (x, y) as a term of the combination."""
        self.builder.add_term(layer, unit, "neuron", 1.0, x, y)
        _raise(self.builder)

    def render_combination(self) -> Task | None:
        if not self.builder.terms():
            return None
        return self._submit(self.builder.spec)

    def _on_model_changed(self, _model: Any) -> None:
        """Terms and positions name the previous model's layers: forget them."""
        self.builder.clear()
        self.picker.set_unit("", 0, None)

    # -- the settings dock's files ---------------------------------------------------------------
    def open_generator(self, parent: QWidget | None) -> None:
        path, _ = QFileDialog.getOpenFileName(
            parent, "Open Generator (Learned Prior)", "", "ONNX generators (*.onnx);;All files (*)"
        )
        if path:
            self.panel.widgets["prior"].choose(path)

    def check_file(self, key: str, path: str) -> BackgroundCall | None:
        """Validate a file the dock names, off the GUI thread.  A generator that loads makes the
        learned prior the parameterization; a bad file is one sentence, and the previous file
        (and parameterization) stay."""
        if key not in FILE_TITLES:
            return None
        widget = self.panel.widgets[key]
        pending = self._checks.pop(key, None)
        if pending is not None:  # a newer choice: the older answer no longer matters
            pending[0].discard()
        restore = pending[1] if pending is not None else widget.previous
        if not path:
            if key == "prior" and self.panel.value("param") == "prior":
                self.panel.set_value("param", "fourier")
                self.message.emit("No generator: back to the Fourier parameterization.", True)
            return None
        check = _check_generator if key == "prior" else _check_spectrum
        call = BackgroundCall(lambda _p: check(path), name=f"fvdesk-check-{key}")
        call.done.connect(lambda text, call=call: self._file_ok(call, key, text))
        call.failed.connect(lambda text, _e, call=call: self._file_bad(call, key, text))
        self._checks[key] = (call, restore)
        self.message.emit(f"Checking {path}…", True)
        return call.start()

    def checking(self) -> bool:
        return bool(self._checks)

    def shutdown(self) -> None:
        """The window closes: answers of checks still running go nowhere."""
        for call, _restore in self._checks.values():
            call.discard()
        self._checks.clear()

    def _file_ok(self, call: BackgroundCall, key: str, text: str) -> None:
        if call.discarded or self._checks.get(key, (None,))[0] is not call:
            return
        del self._checks[key]
        if key == "prior":
            self.panel.set_value("param", "prior")
        self.message.emit(text, True)

    def _file_bad(self, call: BackgroundCall, key: str, text: str) -> None:
        if call.discarded or self._checks.get(key, (None,))[0] is not call:
            return
        _, restore = self._checks.pop(key)
        self.panel.widgets[key].set_path(restore)
        self.panel.changed.emit()  # the restored choice is the one remembered
        self.error.emit(FILE_TITLES[key], text)
