"""Background work: the render thread (one queue of ``Task``s) and one-off calls (load, save).

Everything that touches the model's torch module runs on the render thread, one task at a time:
renders, atlases, and whatever later job kinds need (dataset passes, sweeps).  A task is a
generator factory; the worker runs it through the core's one drive loop
(``fvdesk.core.optim.drive.drive``); cancelling sets the task's ``threading.Event``, which the
engine checks every step.  The GUI thread never touches torch: it only receives events.

Each task carries its own ``TaskSink``, given by whoever submitted it: the queue hands that
task's start, events, result, failure or drop to that sink alone (on the GUI thread), so no
controller sees, or has to filter out, another's tasks.  The queue's ``job_*`` signals repeat
every task's life for observers that watch all of them (tests, logs), never for routing.

Shutdown never calls ``QThread.terminate()``: it drops the queue, sets the running task's cancel
flag, ``quit()``s the thread's event loop and ``wait()``s — the current step finishes, the
generator returns, the loop exits.

One-off calls run on plain daemon threads (``BackgroundCall``).  ``load_model`` cannot be
interrupted, so a loading call is *abandonable*: the app may quit while a huge model still
converts.  A gallery write is not: quitting waits for it (``BackgroundCall.wait_for_writes``).
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import traceback
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from fvdesk.core.errors import FvdeskError
from fvdesk.core.optim.drive import drive

log = logging.getLogger(__name__)

_task_ids = itertools.count(1)


def error_text(exc: BaseException) -> str:
    """The one sentence a user sees: ``FvdeskError`` messages as they are, others with their type."""
    if isinstance(exc, FvdeskError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return (
        f"Unexpected {type(exc).__name__}: {text}" if text else f"Unexpected {type(exc).__name__}."
    )


@dataclass(frozen=True)
class TaskSink:
    """Where one task's life is delivered, on the GUI thread (each callback optional).

    ``event(task, ev)`` for every event the generator yields; then exactly one of
    ``finished(task, result)``, ``failed(task, message, exc)`` or ``dropped(task)`` (cancelled
    before it ran); ``started(task)`` when the render thread picks it up."""

    event: Callable[[Any, Any], None] | None = None
    finished: Callable[[Any, Any], None] | None = None
    failed: Callable[[Any, str, Any], None] | None = None
    dropped: Callable[[Any], None] | None = None
    started: Callable[[Any], None] | None = None


def both(first: TaskSink, second: TaskSink) -> TaskSink:
    """One sink that delivers to ``first`` then ``second`` (a controller that shows a task's
    tiles and a feature that reads the same task's data)."""

    def call(name: str) -> Callable[..., None]:
        def deliver(*args: Any) -> None:
            for sink in (first, second):
                fn = getattr(sink, name)
                if fn is not None:
                    fn(*args)

        return deliver

    return TaskSink(
        **{name: call(name) for name in ("event", "finished", "failed", "dropped", "started")}
    )


@dataclass(eq=False)
class Task:
    """One piece of model work for the render thread.

    ``start(cancel)`` is called *on the render thread* and returns the generator to drive (e.g.
    ``run_job(model, job, cancel)``); its return value arrives with ``RenderQueue.job_finished``.
    ``job`` is the core ``Job`` for render tasks (None for other work, e.g. an atlas); ``model``
    the ``LoadedModel`` it works on; ``sink`` receives this task's events (``TaskSink``).
    """

    title: str
    start: Callable[[threading.Event], Generator[Any, None, Any]]
    job: Any = None
    model: Any = None
    id: int = field(default_factory=lambda: next(_task_ids))
    cancel: threading.Event = field(default_factory=threading.Event)
    sink: TaskSink = field(default_factory=TaskSink)


class RenderWorker(QObject):
    """Lives on the render thread; ``run`` drives one task's generator to its end."""

    started = Signal(object)  # Task
    # (Task, event); shadows QObject.event, but the signal's name is API
    event: Signal = Signal(object, object)  # type: ignore[assignment]  # see above
    finished = Signal(object, object)  # Task, the generator's return value
    failed = Signal(object, str, object)  # Task, message, exception

    #: StepEvents are throttled to this rate; previews and results always go through.
    STEP_HZ = 20.0

    @Slot(object)
    def run(self, task: Task) -> None:
        self.started.emit(task)
        try:
            result = drive(
                task.start(task.cancel), lambda ev: self.event.emit(task, ev), step_hz=self.STEP_HZ
            )
        except Exception as exc:  # noqa: BLE001 - every failure becomes a message, never a crash
            if not isinstance(exc, FvdeskError):
                log.error("task %s failed:\n%s", task.title, traceback.format_exc())
            self.failed.emit(task, error_text(exc), exc)
            return
        self.finished.emit(task, result)


class RenderQueue(QObject):
    """The GUI-thread side of the render thread: a FIFO of tasks, one running at a time; each
    task's life goes to its own sink (``job_*`` repeat it for observers)."""

    job_started = Signal(object)
    job_event = Signal(object, object)
    job_finished = Signal(object, object)
    job_failed = Signal(object, str, object)
    job_dropped = Signal(object)  # cancelled before it ran
    busy_changed = Signal(bool)
    idle = Signal()
    _dispatch = Signal(object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._queue: collections.deque[Task] = collections.deque()
        self.current: Task | None = None
        self._thread = QThread()
        self._thread.setObjectName("fvdesk-render")
        self._worker = RenderWorker()
        self._worker.moveToThread(self._thread)
        self._thread.finished.connect(self._worker.deleteLater)
        self._dispatch.connect(self._worker.run)
        self._worker.started.connect(self._on_started)
        self._worker.event.connect(self._on_event)
        self._worker.finished.connect(self._on_finished)
        self._worker.failed.connect(self._on_failed)
        self._closed = False
        self._thread.start()

    # -- queries ------------------------------------------------------------------------------
    def pending(self) -> list[Task]:
        return list(self._queue)

    def busy(self) -> bool:
        return self.current is not None or bool(self._queue)

    def thread_running(self) -> bool:
        return self._thread.isRunning()

    # -- commands -----------------------------------------------------------------------------
    def submit(self, task: Task, sink: TaskSink | None = None) -> Task:
        """Queue ``task``; its events go to ``sink`` (else to the sink it was made with)."""
        if self._closed:
            raise RuntimeError("the render queue is shut down")
        if sink is not None:
            task.sink = sink
        was_busy = self.busy()
        self._queue.append(task)
        if not was_busy:
            self.busy_changed.emit(True)
        self._next()
        return task

    def cancel_current(self) -> Task | None:
        task = self.current
        if task is not None:
            task.cancel.set()
        return task

    def cancel_job(self, task: Task) -> None:
        """Cancel one task wherever it is (running or waiting)."""
        if task is self.current:
            task.cancel.set()
        elif task in self._queue:
            self._queue.remove(task)
            task.cancel.set()
            self._dropped(task)
            self._maybe_idle()

    def cancel_all(self) -> None:
        while self._queue:
            task = self._queue.popleft()
            task.cancel.set()
            self._dropped(task)
        self.cancel_current()
        self._maybe_idle()

    def shutdown(self, timeout_ms: int = 10_000) -> bool:
        """Cancel everything and join the render thread; True when it has stopped."""
        self._closed = True
        self.cancel_all()
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    # -- internals ----------------------------------------------------------------------------
    def _next(self) -> None:
        if self.current is not None or self._closed:
            return
        if not self._queue:
            self._maybe_idle()
            return
        self.current = self._queue.popleft()
        self._dispatch.emit(self.current)

    def _maybe_idle(self) -> None:
        if not self.busy():
            self.busy_changed.emit(False)
            self.idle.emit()

    def _on_started(self, task: Task) -> None:
        if task.sink.started is not None:
            task.sink.started(task)
        self.job_started.emit(task)

    def _on_event(self, task: Task, ev: Any) -> None:
        if task.sink.event is not None:
            task.sink.event(task, ev)
        self.job_event.emit(task, ev)

    def _dropped(self, task: Task) -> None:
        if task.sink.dropped is not None:
            task.sink.dropped(task)
        self.job_dropped.emit(task)

    def _on_finished(self, task: Task, result: Any) -> None:
        if task is self.current:
            self.current = None
        if task.sink.finished is not None:
            task.sink.finished(task, result)
        self.job_finished.emit(task, result)
        self._next()

    def _on_failed(self, task: Task, message: str, exc: object) -> None:
        if task is self.current:
            self.current = None
        if task.sink.failed is not None:
            task.sink.failed(task, message, exc)
        self.job_failed.emit(task, message, exc)
        self._next()


class BackgroundCall(QObject):
    """Run ``fn(progress)`` on a daemon thread; ``done``/``failed`` arrive on the GUI thread.

    ``progress(fraction, message)`` may be called from the worker thread; it is forwarded as a
    signal.  ``discard()`` makes a late result be ignored (the user closed or opened something
    else meanwhile) — the thread itself cannot be interrupted and simply runs out.
    ``abandonable=False`` marks work that must finish (a gallery write): the app waits for it
    before it exits instead of leaving it half-done.
    """

    progress = Signal(float, str)
    done = Signal(object)
    failed = Signal(str, object)  # message, exception

    _live: set[BackgroundCall] = set()  # keep Python wrappers alive until their signal lands

    def __init__(
        self,
        fn: Callable[[Callable[[float, str], None]], Any],
        name: str = "fvdesk-call",
        *,
        abandonable: bool = True,
    ) -> None:
        super().__init__()
        self._fn = fn
        self._discarded = False
        self.abandonable = abandonable
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
            if not isinstance(exc, FvdeskError):
                log.error("%s failed:\n%s", self._thread.name, traceback.format_exc())
            self.failed.emit(error_text(exc), exc)
            return
        self.done.emit(value)

    def _forget(self, *_: object) -> None:
        BackgroundCall._live.discard(self)

    @classmethod
    def any_alive(cls, *, abandonable: bool | None = None) -> bool:
        """Whether a call is still running (only those of that kind when ``abandonable`` given)."""
        return any(
            c.is_alive() and (abandonable is None or c.abandonable == abandonable)
            for c in list(cls._live)
        )

    @classmethod
    def wait_for_writes(cls, timeout: float | None = None) -> bool:
        """Join every running call that must not be abandoned; True when none is left."""
        for c in [c for c in list(cls._live) if not c.abandonable]:
            c.join(timeout)
        return not cls.any_alive(abandonable=False)
