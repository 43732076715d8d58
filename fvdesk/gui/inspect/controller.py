"""The image inspector's controller: one inspected image and the core's image views about it.

The user opens an image (File > Open Image…, a dropped file, "Inspect This Image" on a dataset
example); the core prepares it as the dataset pass does (``fvdesk.core.inspect.image``) on a
background call, so a huge photo never stalls the window.  Every view is a core job spec
(``fvdesk.core.inspect.specs``) submitted through the job controller like any render: its
images are tiles (saved in galleries, reproduced by ``fvdesk render --from``), its progress and
Cancel are the queue's, and the numbers it finds arrive as ``InspectEvent`` data, which this
controller hands to the panel.  Unit renders go through the ``RenderCache`` (per model, layer,
unit, settings and preprocessing), filled from this session's renders and from galleries and
atlases the user opens, so a second look is instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QFileDialog, QWidget

from fvdesk.core.errors import FvdeskError
from fvdesk.core.imagefolder import image_suffixes
from fvdesk.core.inspect import specs
from fvdesk.core.inspect.cache import RenderCache
from fvdesk.core.inspect.image import InspectedImage, copy_into, open_image
from fvdesk.core.inspect.results import Attribution, InspectEvent, LayerActivations
from fvdesk.core.jobs.job import UnitJob
from fvdesk.core.optim.events import UnitDoneEvent
from fvdesk.gui.inspect.panel import InspectPanel
from fvdesk.gui.runtime.controller import Controller
from fvdesk.gui.runtime.worker import BackgroundCall, Task, TaskSink, error_text

NO_MODEL = "Open a model first: an image is inspected by the model that is open."


def is_image_file(path: Path) -> bool:
    """Whether the window takes a dropped ``path`` as an image to inspect (what Pillow opens,
    the dataset pass's rule)."""
    return path.suffix.lower() in image_suffixes() and path.is_file()


class InspectController(Controller):
    """The inspected image, its views as jobs, their data for the panel (module docstring)."""

    image_opened = Signal(object)  # InspectedImage
    image_cleared = Signal()
    found = Signal(str, object)  # role, a result of fvdesk.core.inspect.results
    rendered = Signal(str, object)  # role, UnitResult (a heat map or a render)

    def __init__(self, *args: Any, jobs: Any, prefs: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.jobs = jobs
        self.prefs = prefs
        self.image: InspectedImage | None = None
        self.cache = RenderCache()
        self.top = 9
        self._opened: dict[str, InspectedImage] = {}  # sha256 -> image, for saved galleries
        self._roles: dict[int, str] = {}  # task id -> what its events are for
        self._opening: BackgroundCall | None = None
        self.sink = TaskSink(event=self._on_event, finished=self._forget, dropped=self._forget,
                             failed=lambda task, _m, _e: self._forget(task))  # fmt: skip
        self.session.changed.connect(self._on_model_changed)
        self.panel = InspectPanel(self)
        self.panel.setObjectName("inspectPanel")
        self.panel.open_requested.connect(lambda: self.open_dialog(self.panel.window()))

    # -- the window's actions -------------------------------------------------------------------
    def commands(self, refs: Any, parent: Any) -> dict[str, Any]:
        return {"open_image": lambda: self.open_dialog(parent)}

    def enabled(self, has_model: bool, refs: list[Any]) -> dict[str, bool]:
        return {"open_image": has_model}

    def open_dialog(self, parent: QWidget | None = None) -> None:
        """File > Open Image…: choose a file to inspect with the open model."""
        if self.session.model is None:
            self.error.emit("Cannot Inspect Image", NO_MODEL)
            return
        patterns = " ".join(f"*{s}" for s in sorted(image_suffixes()))
        start = (self.prefs.last_dir("image") if self.prefs else "") or str(Path.home())
        path, _ = QFileDialog.getOpenFileName(parent, "Open Image", start, f"Images ({patterns})")
        if path:
            if self.prefs is not None:
                self.prefs.set_last_dir("image", str(Path(path).parent))
            self.open_image(path)

    # -- the image ------------------------------------------------------------------------------
    def open_image(self, path: str | Path) -> BackgroundCall | None:
        """Prepare ``path`` for the open model off the GUI thread; on success it becomes the
        inspected image and its activations are shown.  A bad file is one sentence and the
        previous image stays."""
        model = self.session.model
        if model is None:
            self.error.emit("Cannot Inspect Image", NO_MODEL)
            return None
        if self._opening is not None:
            self._opening.discard()
        call = BackgroundCall(lambda _progress: open_image(path, model), "fvdesk-open-image")
        call.done.connect(lambda img, c=call: self._on_opened(c, img))
        call.failed.connect(lambda message, _exc, c=call: self._on_open_failed(c, message))
        self._opening = call
        return call.start()

    def _on_opened(self, call: BackgroundCall, img: InspectedImage) -> None:
        if call.discarded or self.session.model is None:
            return
        self._opening = None
        self.image = img
        self._opened[img.sha256] = img
        self.message.emit(f"Inspecting {img.name} (sha256 {img.sha256[:12]}…).", True)
        self.image_opened.emit(img)

    def _on_open_failed(self, call: BackgroundCall, message: str) -> None:
        if call.discarded:
            return
        self._opening = None
        self.error.emit("Cannot Inspect Image", message)

    def _on_model_changed(self, _model: Any) -> None:
        """An image is prepared for one model's input: another model starts without one."""
        if self._opening is not None:
            self._opening.discard()
            self._opening = None
        self.image = None
        self._roles.clear()
        self.image_cleared.emit()

    def copy_images_into(self, folder: str | Path) -> int:
        """Copy the inspected files behind a saved gallery's image views into it (the gallery
        then carries what its items were computed from); returns how many were copied."""
        try:
            from fvdesk.core.output.gallery import read_gallery

            pairs = read_gallery(Path(folder), images=False)[1]
        except FvdeskError:  # not a gallery (any more): nothing to copy
            return 0
        wanted = {str((item.provenance.job or {}).get("image_sha256", "")) for item, _ in pairs}
        copied = 0
        for sha in wanted & set(self._opened):
            try:
                copy_into(folder, self._opened[sha])
                copied += 1
            except OSError as exc:
                self.error.emit("Cannot Copy Image", f"{folder}: {error_text(exc)}")
        return copied

    def reuse_gallery(self, folder: str | Path) -> BackgroundCall:
        """Index an atlas's unit renders on disk (read off the GUI thread) so the
        inspector shows them instead of rendering them again."""

        def read(_progress: Any) -> RenderCache:
            found = RenderCache()
            found.add_gallery(folder)
            return found

        call = BackgroundCall(read, "fvdesk-reuse-gallery")
        call.done.connect(self.cache.merge)
        call.failed.connect(lambda *_: None)  # a folder without renders simply adds nothing
        return call.start()

    # -- the views ------------------------------------------------------------------------------
    def inspect_layer(self, layer: str, top: int | None = None) -> Task | None:
        """The prediction, ``layer``'s activations and the heat maps of its top units; their
        renders follow when the activations arrive."""
        if self.image is None:
            return None
        self.top = int(top or self.top)
        return self._submit(specs.ImageJob.of(self.image, layer, top=self.top), "activations")

    def attribute(self, to_layer: str, target: str = "top", *, integrated: bool = False,
                  steps: int = 32) -> Task | None:  # fmt: skip
        """Spatial and channel attribution of ``target`` to ``to_layer`` (Building Blocks)."""
        if self.image is None:
            return None
        method = "integrated" if integrated else "gradient"
        return self._build(lambda: specs.AttributionJob.of(
            self.image, to_layer, target=target, method=method, steps=steps), "attribution")  # fmt: skip

    def groups(self, layer: str, k: int) -> Task | None:
        """Neuron groups: the layer's activations factored into ``k`` (NMF), maps and renders."""
        if self.image is None:
            return None
        return self._build(lambda: specs.GroupsJob.of(self.image, layer, groups=k), "groups")

    def grid(self, layer: str, threshold: float = 0.1) -> Task | None:
        """The activation grid: every non-blank position's vector rendered as a direction."""
        if self.image is None or self.session.model is None:
            return None
        graph = self.session.model.graph
        return self._build(lambda: specs.GridJob.of(self.image, layer, graph,
                                                    threshold=threshold), "grid")  # fmt: skip

    def accentuate(self, layer: str, units: list[int], *, penalty_layer: str | None = None,
                   weight: float = 1.0) -> Task | None:  # fmt: skip
        """``units`` rendered from the image, kept close to it (in pixels or at a layer)."""
        if self.image is None:
            return None
        return self._build(lambda: specs.AccentuateJob.of(
            self.image, layer, units, penalty_layer=penalty_layer, weight=weight), "accentuate")  # fmt: skip

    def invert(self, layer: str, *, caricature: bool = False) -> Task | None:
        """What ``layer`` keeps of the image (inversion) or exaggerates (caricature)."""
        if self.image is None:
            return None
        return self._build(lambda: specs.InversionJob.of(self.image, layer, caricature=caricature),
                           "caricature" if caricature else "inversion")  # fmt: skip

    def render_units(self, layer: str, units: list[int], role: str) -> Task | None:
        """Unit renders for the panel: cached ones at once, the rest batched on the queue."""
        if self.session.model is None or not units:
            return None
        try:
            spec = UnitJob(layer, tuple(dict.fromkeys(int(u) for u in units)),
                           kind=self.jobs.unit_kind(layer))  # fmt: skip
            job = self.session.job_for(spec, self.settings())
        except Exception as exc:  # noqa: BLE001 - a bad request is a message, never a crash
            self.error.emit("Cannot Render", error_text(exc))
            return None
        for unit in spec.units:
            hit = self.cache.get(job, unit)
            if hit is not None:
                self.rendered.emit(role, hit)
        rest = self.cache.missing(job)
        return None if rest is None else self._submit(rest.spec, role)

    def _build(self, make: Any, role: str) -> Task | None:
        try:
            spec = make()
            spec.validate(self.session.model.graph)
        except Exception as exc:  # noqa: BLE001 - a bad request is a message, never a crash
            self.error.emit("Cannot Inspect Image", error_text(exc))
            return None
        return self._submit(spec, role)

    def _submit(self, spec: Any, role: str) -> Task | None:
        task = self.jobs.submit(spec, also=self.sink)
        if task is not None:
            self._roles[task.id] = role
        return task

    def _forget(self, task: Task, *_: Any) -> None:
        self._roles.pop(task.id, None)

    # -- events of this controller's tasks --------------------------------------------------------
    def _on_event(self, task: Task, ev: Any) -> None:
        role = self._roles.get(task.id)
        if role is None:
            return
        if isinstance(ev, InspectEvent):
            self.found.emit(role, ev.data)
            if role == "activations" and isinstance(ev.data, LayerActivations):
                units = [int(u) for u in ev.data.order[: self.top]]
                self.render_units(ev.data.layer, units, "top")
            elif role == "attribution" and isinstance(ev.data, Attribution):
                units = [u for u, _ in ev.data.top(self.top)]
                self.render_units(ev.data.to_layer, units, "channels")
        elif isinstance(ev, UnitDoneEvent):
            result = ev.result
            if isinstance(task.job.spec, UnitJob):
                self.cache.put(result)
            self.rendered.emit(role, result)
