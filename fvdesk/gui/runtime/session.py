"""The model session: the one owner of the open ``LoadedModel`` and of the user's choices for it.

Everything that changes the model or what renders read from it goes through here: loading (off
the GUI thread), closing, the preprocessing and labels choices (remembered in the model's sidecar
``MODEL.fvdesk.json``), and where the model lives (device).  Renders never see a choice change
half-way: a job captures the session's preprocessing and labels when it is submitted
(``job_for``), and runs on the render thread with what it captured.

The GUI thread never runs torch here: loading, and finding out which devices this machine has and
where the model's weights are, happen on a background thread; afterwards the render thread reports
the device each job ran on (``note_device``).  The model's ``preprocessing`` stays what it was
loaded with; the session's ``preprocessing`` is the one in force.  Labels are swapped on the model
(a plain list; jobs hold their own tuple) so that every reader sees the names the user chose.

Extension point: a view that needs the model (a dataset browser, an arithmetic builder) connects
to ``changed`` and ``choices_changed`` and builds its jobs with ``job_for``; nothing else in the
app needs to know it exists.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QObject, Signal

from fvdesk.core.errors import FvdeskError
from fvdesk.core.model import sidecar
from fvdesk.core.model.labels import builtin_labels
from fvdesk.core.model.preprocessing import Preprocessing, preset
from fvdesk.core.optim.jobs import Job, JobSpec, ModelRef
from fvdesk.core.optim.settings import RenderSettings
from fvdesk.gui.runtime.worker import BackgroundCall

#: Where the active preprocessing came from, as the status bar says it.
ORIGINS = {
    "user": "your choice",
    "sidecar": "saved choice (sidecar)",
    "metadata": "model metadata",
    "default": "default: the model does not say",
}


def probe_devices(model: Any) -> tuple[str, list[tuple[str, str]]]:
    """Where ``model`` lives and which devices this machine offers (imports torch: call it off
    the GUI thread)."""
    import torch

    from fvdesk.core.device import describe_device

    devices = [("auto", "auto (GPU if available)"), ("cpu", "CPU")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            devices.append((f"cuda:{i}", f"cuda:{i} — {torch.cuda.get_device_name(i)}"))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append(("mps", "Apple GPU (MPS)"))
    return describe_device(model.device), devices


def is_embedded(path: str | Path) -> bool:
    """Files shipped inside fvdesk (the demo model) never get a sidecar written beside them."""
    from fvdesk.core.resources import resources_dir

    try:
        Path(path).resolve().relative_to(resources_dir().resolve())
    except ValueError:
        return False
    return True


class ModelSession(QObject):
    """The open model, the choices in force for it, and where it runs."""

    loading = Signal(str)  # file name
    load_progress = Signal(float, str)
    load_failed = Signal(str)
    loaded = Signal(object, float)  # LoadedModel, seconds
    changed = Signal(object)  # LoadedModel or None
    choices_changed = Signal()  # preprocessing or labels
    labels_changed = Signal(object)  # list[str] | None
    device_changed = Signal(str)
    devices_found = Signal(object)  # [(value, text)]
    message = Signal(str)
    error = Signal(str, str)  # title, message

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.model: Any = None  # LoadedModel
        self.preprocessing: Preprocessing | None = None
        self.labels_file = ""
        self.device_text = ""
        self._own_labels: tuple[list[str] | None, str] = (None, "none")
        self._loading: BackgroundCall | None = None
        self._probe: BackgroundCall | None = None
        #: Choices of other controllers that every job built from now on carries (the dataset's
        #: colour matrix): ``hook(RenderSettings) -> RenderSettings``, applied in order.
        self.settings_hooks: list[Callable[[RenderSettings], RenderSettings]] = []

    # -- loading ------------------------------------------------------------------------------
    def is_loading(self) -> bool:
        return self._loading is not None

    def open(self, path: str | Path, device_pref: str = "auto") -> BackgroundCall:
        """Load ``path`` off the GUI thread; the current model stays open until it succeeds."""
        path = Path(path)
        if self._loading is not None:
            self._loading.discard()

        def job(progress: Callable[[float, str], None]) -> Any:
            from fvdesk.core.device import pick_device
            from fvdesk.core.model.loader import load_model

            try:
                device = pick_device(device_pref)
            except FvdeskError as exc:  # e.g. a saved "cuda:1" on a machine without it
                progress(0.0, f"{exc} Using the default device.")
                device = pick_device("auto")
            t0 = time.perf_counter()
            model = load_model(path, device=device, progress=progress)
            return model, time.perf_counter() - t0, probe_devices(model)

        call = BackgroundCall(job, name="fvdesk-load")
        call.progress.connect(lambda f, m, call=call: self._progress(call, f, m))
        call.done.connect(lambda value, call=call: self._on_loaded(call, value))
        call.failed.connect(lambda message, exc, call=call: self._on_load_failed(call, message))
        self._loading = call
        self.loading.emit(path.name)
        call.start()
        return call

    def _current(self, call: BackgroundCall) -> bool:
        """True when ``call`` is the load still wanted (and it is now over)."""
        if call.discarded or call is not self._loading:
            return False
        self._loading = None
        return True

    def _progress(self, call: BackgroundCall, fraction: float, message: str) -> None:
        if call is self._loading:
            self.load_progress.emit(fraction, message)

    def _on_loaded(self, call: BackgroundCall, value: Any) -> None:
        if not self._current(call):
            return
        model, seconds, (device_text, devices) = value
        self.set_model(model, device=(device_text, devices))
        self.loaded.emit(model, seconds)

    def _on_load_failed(self, call: BackgroundCall, message: str) -> None:
        if self._current(call):
            self.load_failed.emit(message)

    def close(self) -> None:
        """Close the model (and forget a load in progress)."""
        if self._loading is not None:
            self._loading.discard()
            self._loading = None
        self.set_model(None)

    def discard_load(self) -> None:
        if self._loading is not None:
            self._loading.discard()

    def set_model(
        self, model: Any, *, device: tuple[str, list[tuple[str, str]]] | None = None
    ) -> None:
        """Make ``model`` (or nothing) the open model.  ``device``: where it lives and the
        machine's devices, when the caller already knows (else found out off the GUI thread)."""
        self.model = model
        self.preprocessing = model.preprocessing if model is not None else None
        self.labels_file = ""
        self.device_text = ""
        if model is not None:
            n = model.graph.logits.channels if model.graph.logits is not None else None
            if model.labels_source in ("sidecar", "user"):
                self._own_labels = builtin_labels(model.metadata, n)
            else:
                self._own_labels = (model.labels, model.labels_source)
        self.changed.emit(model)
        if model is None:
            return
        if device is not None:
            self._show_device(model, device)
            return
        call = BackgroundCall(lambda _p: probe_devices(model), name="fvdesk-devices")
        call.done.connect(lambda value, model=model: self._show_device(model, value))
        self._probe = call.start()

    def _show_device(self, model: Any, value: tuple[str, list[tuple[str, str]]]) -> None:
        if model is not self.model:
            return
        text, devices = value
        self.devices_found.emit(devices)
        self.note_device(text)

    def note_device(self, text: str) -> None:
        """Where the model now lives (the render thread moves it to each job's device)."""
        if text and text != self.device_text:
            self.device_text = text
            self.device_changed.emit(text)

    # -- jobs ---------------------------------------------------------------------------------
    def job_for(self, spec: JobSpec, settings: RenderSettings, *, title: str = "") -> Job:
        """A job for the open model that captures the choices in force now (the runner checks
        it against the model, so a bad request fails its tiles, with the reason)."""
        m = self.model
        labels = tuple(m.labels) if m.labels else None
        return Job(spec, settings, self.preprocessing or m.preprocessing, ModelRef.of(m), labels,
                   title or spec.title)  # fmt: skip

    def unit_label(self, layer: str, unit: int) -> str | None:
        """The class name of a unit under the labels in force (the core's one rule)."""
        if self.model is None:
            return None
        return self.model.graph.unit_label(layer, unit, self.model.labels)

    # -- the user's choices -------------------------------------------------------------------
    def preprocessing_origin(self) -> str:
        pre = self.preprocessing
        return ORIGINS.get(pre.source, pre.source) if pre is not None else ""

    def _remember(self, what: str, **entries: Any) -> str:
        """Write ``entries`` to the sidecar; the sentence that says whether it was remembered."""
        if is_embedded(self.model.path):
            return f"{what} for this session."
        try:
            sidecar.save_sidecar(self.model.path, **entries)
        except (OSError, FvdeskError) as exc:  # save_sidecar raises ConfigError
            return f"{what} (not remembered: {exc})."
        return f"{what}; remembered next to {self.model.name}."

    def choose_preprocessing(self, name: str) -> None:
        """Use preset ``name`` for the next jobs (running and queued jobs keep theirs)."""
        if self.model is None:
            return
        pre = preset(name, source="user")
        self.preprocessing = pre
        self.message.emit(
            self._remember(f"Preprocessing set to {pre.describe()}", preprocessing=pre)
        )
        self.choices_changed.emit()

    def choose_labels_file(self, path: str) -> None:
        """Name the classes from ``path`` ("" goes back to the labels the model came with)."""
        if self.model is None:
            return
        if not path:
            self.revert_labels()
            return
        from fvdesk.core.model.labels import read_labels_file

        try:
            labels = read_labels_file(path)
        except FvdeskError as exc:
            self.error.emit("Cannot Use Labels File", str(exc))
            return
        note = self._remember(f"{len(labels)} labels from {path}", labels=Path(path))
        self._set_labels(labels, "user", path)
        self.message.emit(note)

    def revert_labels(self) -> None:
        """Back to the labels the model came with; the sidecar forgets the chosen file."""
        if self.model is None:
            return
        labels, source = self._own_labels
        what = f"Labels: back to the model's own ({len(labels or [])}, {source})"
        note = self._remember(what, forget=("labels",))
        self._set_labels(labels, source, "")
        self.message.emit(note)

    def _set_labels(self, labels: list[str] | None, source: str, path: str) -> None:
        self.model.labels = labels
        self.model.labels_source = source
        self.labels_file = path
        self.labels_changed.emit(labels)
        self.choices_changed.emit()
