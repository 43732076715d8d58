"""The model session: the one owner of the open ``LoadedModel`` and of the user's choices for it.

Everything that changes the model or what renders read from it goes through here: loading (off
the GUI thread), closing, the user's choices of preprocessing and labels, and where the model lives
(device).  The choices are the core's ``Choices`` (``fvdesk.core.model.choices``: the one
precedence, the sources, the sidecar ``MODEL.fvdesk.json``), held here and never written onto the
model, which the render thread may be using: a job captures the choices in force when it is
submitted (``job_for``) and runs with what it captured, so renders never see a choice change
half-way and the model stays as it was loaded.

The GUI thread never runs torch here: loading, and finding out which devices this machine has and
where the model's weights are, happen on a background thread; afterwards the render thread reports
the device each job ran on (``note_device``).

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

from fvdesk.core.errors import ConfigError, FvdeskError
from fvdesk.core.jobs.job import Job, JobSpec
from fvdesk.core.model.choices import SOURCES, Choices
from fvdesk.core.model.preprocessing import Preprocessing
from fvdesk.core.optim.settings import RenderSettings, size_refusal
from fvdesk.gui.runtime.worker import BackgroundCall

#: Where a choice in force came from, as the status bar says it (the core's words).
ORIGINS = SOURCES


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
        self.choices: Choices | None = None  # the user's choices in force for it
        self.device_text = ""
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
        self.choices = Choices.of(model) if model is not None else None
        self.device_text = ""
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
        it against the model, so a bad request fails its tiles, with the reason).  A render's
        explicit canvas the model cannot take is refused (``ConfigError``), as by the CLI."""
        if spec.slots():
            self.check_canvas(settings)
        return Job.for_model(self.model, spec, settings, title=title, choices=self.choices)

    def check_canvas(self, settings: RenderSettings) -> None:
        """Refuse a canvas size the open model cannot take (the core's sentence)."""
        refusal = size_refusal(settings, self.model.input, self.model.name)
        if refusal is not None:
            raise ConfigError(f"Canvas size {settings.size} px: {refusal}")

    def unit_label(self, layer: str, unit: int) -> str | None:
        """The class name of a unit under the labels in force (the core's one rule)."""
        if self.model is None or self.choices is None:
            return None
        return self.choices.label_of(self.model.graph, layer, unit)

    # -- the user's choices -------------------------------------------------------------------
    @property
    def preprocessing(self) -> Preprocessing | None:
        """The preprocessing in force (the model's own stays what it was loaded with)."""
        return self.choices.preprocessing if self.choices is not None else None

    @property
    def labels(self) -> list[str] | None:
        """The class labels in force."""
        return self.choices.label_list() if self.choices is not None else None

    @property
    def labels_file(self) -> str:
        """The labels file in force ("" for the labels the model came with)."""
        return self.choices.labels_file if self.choices is not None else ""

    def preprocessing_origin(self) -> str:
        pre = self.preprocessing
        return ORIGINS.get(pre.source, pre.source) if pre is not None else ""

    def _use(self, chosen: Choices, what: str, **remember: bool) -> None:
        """Put ``chosen`` in force for the next jobs, saying whether the sidecar remembers it."""
        if is_embedded(self.model.path):
            note = f"{what} for this session."
        else:
            try:
                chosen.remember(self.model.path, **remember)
            except (OSError, FvdeskError) as exc:  # the sidecar write raises ConfigError
                note = f"{what} (not remembered: {exc})."
            else:
                note = f"{what}; remembered next to {self.model.name}."
        self.choices = chosen
        if remember.get("labels"):
            self.labels_changed.emit(chosen.label_list())
        self.choices_changed.emit()
        self.message.emit(note)

    def choose_preprocessing(self, name: str) -> None:
        """Use preset ``name`` for the next jobs (running and queued jobs keep theirs)."""
        if self.model is None or self.choices is None:
            return
        chosen = self.choices.with_preprocessing(name)
        self._use(chosen, f"Preprocessing set to {chosen.preprocessing.describe()}",
                  preprocessing=True)  # fmt: skip

    def choose_labels_file(self, path: str) -> None:
        """Name the classes from ``path`` ("" goes back to the labels the model came with)."""
        if self.model is None or self.choices is None:
            return
        if not path:
            self.revert_labels()
            return
        try:
            chosen = self.choices.with_labels_file(path)
        except FvdeskError as exc:
            self.error.emit("Cannot Use Labels File", str(exc))
            return
        self._use(chosen, f"{len(chosen.labels or ())} labels from {path}", labels=True)

    def revert_labels(self) -> None:
        """Back to the labels the model came with; the sidecar forgets the chosen file."""
        if self.model is None or self.choices is None:
            return
        logits = self.model.graph.logits
        chosen = self.choices.with_own_labels(self.model.metadata,
                                              logits.channels if logits is not None else None)  # fmt: skip
        what = (f"Labels: back to the model's own ({len(chosen.labels or ())}, "
                f"{chosen.labels_source})")  # fmt: skip
        self._use(chosen, what, labels=True)
