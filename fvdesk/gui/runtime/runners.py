"""Running model work for widgets off the GUI thread: the ``JobRunner`` protocol and its two
implementations.

``QueueRunner`` puts jobs on the app's one ``RenderQueue`` (so a dataset pass never competes with
a render for the cores; Cancel is the queue's) and plain functions on background calls;
``ThreadRunner`` is self-contained (daemon threads, a signal per event) for widgets used outside
the window.  Callbacks arrive on the GUI thread; a failure is one sentence.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal

from fvdesk.gui.runtime.worker import error_text

EventFn = Callable[[Any], None]
DoneFn = Callable[[Any], None]
FailFn = Callable[[str], None]


# ------------------------------------------------------------------------------------------------
# Running work off the GUI thread
# ------------------------------------------------------------------------------------------------
class JobRunner(Protocol):
    """What the widgets need from the app: run a core job, or a plain function, off the GUI
    thread; the callbacks are called on the GUI thread."""

    def submit(self, model: Any, job: Any, on_event: EventFn, on_done: DoneFn,
               on_failed: FailFn) -> Callable[[], None]:  # fmt: skip
        """Start ``run_job(model, job)``; returns a function that cancels it."""
        ...

    def call(self, fn: Callable[[], Any], on_done: DoneFn, on_failed: FailFn) -> None:
        """Run ``fn()``; its value goes to ``on_done``, a failure's message to ``on_failed``."""
        ...


class ThreadRunner(QObject):
    """A ``JobRunner`` on daemon threads: every event and result crosses to the GUI thread as a
    queued signal; ``shutdown`` cancels what runs and waits for it."""

    _event = Signal(int, object)
    _done = Signal(int, object)
    _failed = Signal(int, str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ids = itertools.count(1)
        self._tasks: dict[int, tuple[EventFn | None, DoneFn, FailFn]] = {}
        self._threads: dict[int, tuple[threading.Thread, threading.Event]] = {}
        self._event.connect(self._on_event)
        self._done.connect(self._on_done)
        self._failed.connect(self._on_failed)

    def submit(self, model: Any, job: Any, on_event: EventFn, on_done: DoneFn,
               on_failed: FailFn) -> Callable[[], None]:  # fmt: skip
        from fvdesk.core.jobs.run import run_job
        from fvdesk.core.optim.drive import drive

        cancel = threading.Event()
        tid = next(self._ids)

        def work() -> Any:
            return drive(run_job(model, job, cancel), lambda ev: self._event.emit(tid, ev))

        self._start(tid, work, on_event, on_done, on_failed, cancel)
        return cancel.set

    def call(self, fn: Callable[[], Any], on_done: DoneFn, on_failed: FailFn) -> None:
        self._start(next(self._ids), fn, None, on_done, on_failed, threading.Event())

    def busy(self) -> bool:
        return any(t.is_alive() for t, _ in self._threads.values())

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Cancel every job, wait for the threads (True when all stopped)."""
        for _, cancel in self._threads.values():
            cancel.set()
        for t, _ in list(self._threads.values()):
            t.join(timeout)
        return not self.busy()

    def _start(self, tid: int, work: Callable[[], Any], on_event: EventFn | None, on_done: DoneFn,
               on_failed: FailFn, cancel: threading.Event) -> None:  # fmt: skip
        self._tasks[tid] = (on_event, on_done, on_failed)

        def main() -> None:
            try:
                value = work()
            except Exception as e:  # noqa: BLE001 - every failure reaches the GUI as one sentence
                self._failed.emit(tid, error_text(e))
                return
            self._done.emit(tid, value)

        t = threading.Thread(target=main, name=f"fvdesk-examples-{tid}", daemon=True)
        self._threads[tid] = (t, cancel)
        t.start()

    def _on_event(self, tid: int, ev: object) -> None:
        task = self._tasks.get(tid)
        if task is not None and task[0] is not None:
            task[0](ev)

    def _on_done(self, tid: int, value: object) -> None:
        task = self._tasks.pop(tid, None)
        self._threads.pop(tid, None)
        if task is not None:
            task[1](value)

    def _on_failed(self, tid: int, message: str) -> None:
        task = self._tasks.pop(tid, None)
        self._threads.pop(tid, None)
        if task is not None:
            task[2](message)


class QueueRunner(QObject):
    """A ``JobRunner`` over the app's ``RenderQueue`` (jobs take their turn on the render thread,
    so a pass never competes with a render for the cores) and ``BackgroundCall`` (functions)."""

    def __init__(self, queue: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.queue = queue
        self._tasks: dict[int, tuple[EventFn, DoneFn, FailFn]] = {}
        queue.job_event.connect(self._on_event)
        queue.job_finished.connect(self._on_finished)
        queue.job_failed.connect(lambda task, message, _exc: self._end(task, 2, message))
        queue.job_dropped.connect(lambda task: self._end(task, 2, "Cancelled before it ran."))

    def submit(self, model: Any, job: Any, on_event: EventFn, on_done: DoneFn,
               on_failed: FailFn) -> Callable[[], None]:  # fmt: skip
        def start(cancel: threading.Event) -> Any:
            from fvdesk.core.jobs.run import run_job

            return run_job(model, job, cancel)

        return self.run(job.title, start, on_event, on_done, on_failed, job=job, model=model)

    def run(self, title: str, start: Callable[[threading.Event], Any], on_event: EventFn,
            on_done: DoneFn, on_failed: FailFn, *, job: Any = None,
            model: Any = None) -> Callable[[], None]:  # fmt: skip
        """Queue any model work: ``start(cancel)`` returns the generator the render thread
        drives (e.g. clustering examples, which runs the model)."""
        from fvdesk.gui.runtime.worker import Task

        task = Task(title, start, job=job, model=model)
        self._tasks[task.id] = (on_event, on_done, on_failed)
        self.queue.submit(task)
        return lambda: self.queue.cancel_job(task)

    def call(self, fn: Callable[[], Any], on_done: DoneFn, on_failed: FailFn) -> None:
        from fvdesk.gui.runtime.worker import BackgroundCall

        bc = BackgroundCall(lambda _progress: fn(), name="fvdesk-examples")
        bc.done.connect(on_done)
        bc.failed.connect(lambda message, _exc: on_failed(message))
        bc.start()

    def _on_event(self, task: Any, ev: object) -> None:
        cbs = self._tasks.get(task.id)
        if cbs is not None:
            cbs[0](ev)

    def _on_finished(self, task: Any, result: object) -> None:
        self._end(task, 1, result)

    def _end(self, task: Any, which: int, value: Any) -> None:
        cbs = self._tasks.pop(task.id, None)
        if cbs is not None:
            cbs[which](value)
