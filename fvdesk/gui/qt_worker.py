"""Background work: the render queue (a QObject on a QThread) and one-off calls (load, save).

Rendering follows the superqt pattern: the core's render generator runs on the worker thread and
every event it yields becomes a signal; cancelling sets the job's ``threading.Event``, which the
engine checks every step.  The GUI thread never touches torch: it only receives events.

Shutdown never calls ``QThread.terminate()``: it drops the queue, sets the running job's cancel
flag, ``quit()``s the thread's event loop and ``wait()``s — the current step finishes, the
generator returns, the loop exits.

One-off calls (model loading, gallery writing) run on plain daemon threads: ``load_model`` cannot
be interrupted, and a daemon thread lets the app quit while a huge model is still converting.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

log = logging.getLogger(__name__)

_job_ids = itertools.count(1)


def error_text(exc: BaseException) -> str:
    """The one sentence a user sees: ``FvdeskError`` messages as they are, others with their type."""
    from fvdesk.core.errors import FvdeskError

    if isinstance(exc, FvdeskError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"Unexpected {type(exc).__name__}: {text}" if text else f"Unexpected {type(exc).__name__}."
    )


@dataclass(eq=False)
class CombinationTerm:
    """One summand of a neuron-arithmetic objective."""

    layer: str
    unit: int
    weight: float = 1.0
    label: str | None = None
    kind: str = "channel"  # objective kind of the unit (channel, neuron, logit, prob)

    def caption(self) -> str:
        sign = "−" if self.weight < 0 else "+"
        w = abs(self.weight)
        scale = "" if w == 1 else f"{w:g}·"
        return f"{sign} {scale}{self.layer}:{self.unit}"


@dataclass(eq=False)
class RenderJob:
    """What the worker runs: a ``UnitJob`` for the engine, or a combination of channel objectives.

    ``model``, ``settings`` and ``preprocessing`` are captured when the job is queued, so changing
    the dock or opening another model never changes a job already waiting.
    """

    model: Any  # LoadedModel
    layer: str
    units: list[int]
    kind: str  # channel | neuron | deepdream | logit | prob | combination
    settings: Any  # RenderSettings
    negative: bool = False
    facets: int = 1
    terms: list[CombinationTerm] = field(default_factory=list)
    preprocessing: Any = None  # Preprocessing to apply before running, or None to keep
    title: str = ""
    id: int = field(default_factory=lambda: next(_job_ids))
    cancel: threading.Event = field(default_factory=threading.Event)

    @property
    def images(self) -> int:
        """How many images (tiles) the job produces."""
        if self.kind in ("combination", "deepdream"):
            return max(1, self.facets)
        return len(self.units) * max(1, self.facets)


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: its results (``UnitResult`` list), and whether it was cancelled."""

    results: list
    cancelled: bool
    seconds: float


class RenderWorker(QObject):
    """Lives on the render thread; ``run`` drives one job's generator to its end."""

    started = Signal(object)  # RenderJob
    event = Signal(object, object)  # RenderJob, engine event
    finished = Signal(object, object)  # RenderJob, JobOutcome
    failed = Signal(object, str)  # RenderJob, message

    #: StepEvents are throttled to this rate; previews and unit results always go through.
    STEP_HZ = 20.0

    @Slot(object)
    def run(self, job: RenderJob) -> None:
        self.started.emit(job)
        t0 = time.perf_counter()
        last_step = 0.0
        try:
            gen = self._generator(job)
            while True:
                try:
                    ev = next(gen)
                except StopIteration as stop:
                    results = list(stop.value or [])
                    break
                name = type(ev).__name__
                if name == "StepEvent":
                    now = time.perf_counter()
                    final = getattr(ev, "step", 0) >= getattr(ev, "steps", 0)  # steps count from 1
                    if now - last_step < 1.0 / self.STEP_HZ and not final:
                        continue
                    last_step = now
                self.event.emit(job, ev)
        except BaseException as exc:  # noqa: BLE001 - every failure becomes a failed tile, never a crash
            if not isinstance(exc, Exception):
                raise
            from fvdesk.core.errors import FvdeskError

            if not isinstance(exc, FvdeskError):
                log.error("render job %s failed:\n%s", job.id, traceback.format_exc())
            self.failed.emit(job, error_text(exc))
            return
        self.finished.emit(job, JobOutcome(results, job.cancel.is_set(), time.perf_counter() - t0))

    def _generator(self, job: RenderJob):
        """The core job for ``job``, run by the core's job runner (imported here, on the worker
        thread).  The job carries its own preprocessing and labels: the model is not touched."""
        from fvdesk.core.optim.jobs import CombinationJob, Job, ModelRef, Term, UnitJob
        from fvdesk.core.optim.run import run_job

        model = job.model
        facets = max(1, job.facets)
        if job.kind == "combination":
            terms = tuple(Term(t.layer, t.unit, t.kind, t.weight) for t in job.terms)
            spec = CombinationJob(terms, negative=job.negative, facets=facets)
        else:
            units = () if job.kind == "deepdream" else tuple(job.units)
            spec = UnitJob(job.layer, units, kind=job.kind, negative=job.negative, facets=facets)
        core = Job(
            spec,
            job.settings,
            job.preprocessing or model.preprocessing,
            ModelRef.of(model),
            tuple(model.labels) if model.labels else None,
            job.title,
        )
        out = yield from run_job(model, core, job.cancel)
        return out.results


class RenderQueue(QObject):
    """The GUI-thread side: a FIFO of jobs, one running at a time on the worker thread."""

    job_started = Signal(object)
    job_event = Signal(object, object)
    job_finished = Signal(object, object)
    job_failed = Signal(object, str)
    job_dropped = Signal(object)  # cancelled before it ran
    idle = Signal()
    _dispatch = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._queue: collections.deque[RenderJob] = collections.deque()
        self.current: RenderJob | None = None
        self._thread = QThread()
        self._thread.setObjectName("fvdesk-render")
        self._worker = RenderWorker()
        self._worker.moveToThread(self._thread)
        self._thread.finished.connect(self._worker.deleteLater)
        self._dispatch.connect(self._worker.run)
        self._worker.started.connect(self.job_started)
        self._worker.event.connect(self._on_event)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._closed = False
        self._thread.start()

    # -- queries ------------------------------------------------------------------------------
    def pending(self) -> list[RenderJob]:
        return list(self._queue)

    def busy(self) -> bool:
        return self.current is not None or bool(self._queue)

    def thread_running(self) -> bool:
        return self._thread.isRunning()

    # -- commands -----------------------------------------------------------------------------
    def submit(self, job: RenderJob) -> None:
        if self._closed:
            raise RuntimeError("the render queue is shut down")
        self._queue.append(job)
        self._next()

    def cancel_current(self) -> RenderJob | None:
        job = self.current
        if job is not None:
            job.cancel.set()
        return job

    def cancel_job(self, job: RenderJob) -> None:
        """Cancel one job wherever it is (running or waiting)."""
        if job is self.current:
            job.cancel.set()
            return
        if job in self._queue:
            self._queue.remove(job)
            job.cancel.set()
            self.job_dropped.emit(job)

    def cancel_all(self) -> None:
        while self._queue:
            job = self._queue.popleft()
            job.cancel.set()
            self.job_dropped.emit(job)
        self.cancel_current()

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel everything and join the worker thread; True when it has stopped."""
        self._closed = True
        self.cancel_all()
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    # -- internals ----------------------------------------------------------------------------
    def _next(self) -> None:
        if self.current is not None or not self._queue or self._closed:
            if self.current is None and not self._queue:
                self.idle.emit()
            return
        self.current = self._queue.popleft()
        self._dispatch.emit(self.current)

    def _on_event(self, job: RenderJob, ev: object) -> None:
        self.job_event.emit(job, ev)

    def _on_finished(self, job: RenderJob, outcome: JobOutcome) -> None:
        if job is self.current:
            self.current = None
        self.job_finished.emit(job, outcome)
        self._next()

    def _on_failed(self, job: RenderJob, message: str) -> None:
        if job is self.current:
            self.current = None
        self.job_failed.emit(job, message)
        self._next()


class BackgroundCall(QObject):
    """Run ``fn(progress)`` on a daemon thread; ``done``/``failed`` arrive on the GUI thread.

    ``progress(fraction, message)`` may be called from the worker thread; it is forwarded as a
    signal.  ``discard()`` makes a late result be ignored (the user closed or opened something
    else meanwhile) — the thread itself cannot be interrupted and simply runs out.
    """

    progress = Signal(float, str)
    done = Signal(object)
    failed = Signal(str, object)  # message, exception

    _live: set[BackgroundCall] = set()  # keep Python wrappers alive until their signal lands

    def __init__(
        self, fn: Callable[[Callable[[float, str], None]], Any], name: str = "fvdesk-call"
    ) -> None:
        super().__init__()
        self._fn = fn
        self._discarded = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> BackgroundCall:
        BackgroundCall._live.add(self)
        self.done.connect(self._forget)
        self.failed.connect(self._forget)
        self._thread.start()
        return self

    def discard(self) -> None:
        self._discarded = True

    @property
    def discarded(self) -> bool:
        return self._discarded

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _report(self, fraction: float, message: str) -> None:
        if not self._discarded:
            self.progress.emit(float(fraction), str(message))

    def _main(self) -> None:
        try:
            value = self._fn(self._report)
        except Exception as exc:  # noqa: BLE001 - reported to the GUI as a message
            from fvdesk.core.errors import FvdeskError

            if not isinstance(exc, FvdeskError):
                log.error("%s failed:\n%s", self._thread.name, traceback.format_exc())
            self.failed.emit(error_text(exc), exc)
            return
        self.done.emit(value)

    def _forget(self, *_: object) -> None:
        BackgroundCall._live.discard(self)

    @classmethod
    def any_alive(cls) -> bool:
        return any(c.is_alive() for c in cls._live)
